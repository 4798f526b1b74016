"""The DiT family on latent video: [B, T, H, W, C] latents, images as one-frame videos.

A clip's latent is cut into ``pt x p x p`` patches (time x height x width), each embedded by one
linear map (a 3D convolution with stride = kernel, written as a Dense on the flattened patch,
initialised as DiT initialises its 2D one), plus a fixed sin-cos position embedding over all
three axes: the image DiT's 2D table for (row, column) plus a 1D table over time, shifted so that
frame 0 adds nothing. A one-frame video is therefore exactly an image to the model: with
``pt = 1`` and the same weights, :class:`VideoDiT` on ``[B, 1, H, W, C]`` computes what
:class:`latentjax.models.dit.DiT` computes on ``[B, H, W, C]`` (tested), so one model can train
on images and clips, and a causal video autoencoder's first latent frame (the first frame,
encoded alone) is an image latent.

The blocks are the image DiT's adaLN-Zero blocks (class conditioning as there); what they attend
over is chosen by ``attention``:

- ``"full"``: every token attends to every token of the clip (T/pt x H/p x W/p of them);
- ``"factorised"``: blocks alternate between spatial attention (tokens of one latent frame,
  each frame alone) and temporal attention (tokens of one position, across frames), as Latte's
  first variant (Ma et al. 2024) and TimeSformer's divided attention (Bertasius et al. 2021):
  attention costs (T/pt) (HW/p^2)^2 + (HW/p^2) (T/pt)^2 instead of (T HW / (pt p^2))^2.

Position embeddings are computed from the input's own shape (they are fixed, not learnt), so a
model built for clips of ``frames`` latent frames also runs on images and shorter clips.
"""

from __future__ import annotations

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from latentjax.models.dit import (
    XAVIER,
    DiTBlock,
    FinalLayer,
    LabelEmbedder,
    TimestepEmbedder,
    sincos_2d,
)
from latentjax.models.layers import dense
from latentjax.parallel.axes import BATCH, EMBED

ATTENTION = ("full", "factorised")


def sincos_1d(dim: int, length: int) -> np.ndarray:
    """Fixed 1-D sin-cos embedding [length, dim] of positions 0..length-1 minus that of position
    0, so position 0 adds nothing (sin first, as the halves of :func:`sincos_2d`)."""
    if dim % 2:
        raise ValueError(f"1-D sin-cos position embedding needs an even dim, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", np.arange(length, dtype=np.float64), omega)
    emb = np.concatenate([np.sin(out), np.cos(out)], axis=1)
    return (emb - emb[:1]).astype(np.float32)


def sincos_grid(dim: int, height: int, width: int) -> np.ndarray:
    """:func:`latentjax.models.dit.sincos_2d` of a ``height`` x ``width`` grid (any aspect):
    half the channels encode the column, half the row. [height * width, dim]."""
    if height == width:
        return sincos_2d(dim, height)
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))

    def one_d(pos: np.ndarray) -> np.ndarray:
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows, cols = np.meshgrid(
        np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij"
    )
    return np.concatenate([one_d(cols), one_d(rows)], axis=1).astype(np.float32)


def sincos_3d(dim: int, frames: int, height: int, width: int) -> np.ndarray:
    """[frames * height * width, dim] (time-major): the 2-D table of (row, column) plus the 1-D
    table of the frame."""
    spatial = sincos_grid(dim, height, width)  # [H W, D]
    temporal = sincos_1d(dim, frames)  # [T, D]
    return (temporal[:, None, :] + spatial[None]).reshape(frames * height * width, dim)


class VideoDiT(nn.Module):
    """Diffusion Transformer on [B, T, H, W, C] latents (module docstring). ``frames`` is the
    latent clip length the model is built for (recorded for planning; any T divisible by
    ``temporal_patch_size`` runs)."""

    input_size: int
    frames: int
    patch_size: int
    in_channels: int
    hidden_size: int
    depth: int
    num_heads: int
    temporal_patch_size: int = 1
    attention: str = "full"
    mlp_ratio: float = 4.0
    num_classes: int = 10  # 0: unconditional
    learn_sigma: bool = False
    null_class: bool = True

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @nn.compact
    def __call__(
        self, x: jax.Array, t: jax.Array, y: jax.Array, *, return_repa: bool = False
    ) -> jax.Array:
        """x [B, T, H, W, C] latents, t [B] in [0, 1000), y [B] int labels -> [B, T, H, W, out].
        (``return_repa`` is the image DiT's signature; REPA on clips is not built.)"""
        if return_repa:
            raise ValueError("REPA is not built for the video DiT")
        if self.attention not in ATTENTION:
            raise ValueError(f"unknown attention {self.attention!r}; use one of {ATTENTION}")
        b, frames, h, w, _ = x.shape
        p, pt = self.patch_size, self.temporal_patch_size
        if h % p or w % p or frames % pt:
            raise ValueError(
                f"a latent clip of {frames}x{h}x{w} is not divisible into {pt}x{p}x{p} patches"
            )
        gt, gh, gw = frames // pt, h // p, w // p
        patches = einops.rearrange(
            x, "b (t r) (h p) (w q) c -> b (t h w) (r p q c)", r=pt, p=p, q=p
        )
        # The patch embedding of DiT, xavier over the flattened kernel [pt p p C, D].
        tokens = dense(self.hidden_size, (None, EMBED), kernel_init=XAVIER, name="x_embedder")(
            patches
        )
        tokens = tokens + sincos_3d(self.hidden_size, gt, gh, gw)[None]
        tokens = nn.with_logical_constraint(tokens, (BATCH, None, None))
        c = TimestepEmbedder(self.hidden_size, name="t_embedder")(t)
        if self.num_classes > 0:
            c = c + LabelEmbedder(
                self.num_classes, self.hidden_size, self.null_class, name="y_embedder"
            )(y)
        for i in range(self.depth):
            block = DiTBlock(self.hidden_size, self.num_heads, self.mlp_ratio, name=f"block_{i}")
            if self.attention == "full":
                tokens = block(tokens, c)
            elif i % 2 == 0:  # spatial: each latent frame alone
                per_frame = einops.rearrange(tokens, "b (t n) d -> (b t) n d", t=gt)
                out = block(per_frame, jnp.repeat(c, gt, axis=0))
                tokens = einops.rearrange(out, "(b t) n d -> b (t n) d", b=b)
            else:  # temporal: each position across the frames
                per_site = einops.rearrange(tokens, "b (t n) d -> (b n) t d", t=gt)
                out = block(per_site, jnp.repeat(c, gh * gw, axis=0))
                tokens = einops.rearrange(out, "(b n) t d -> b (t n) d", b=b)
        out_features = pt * p * p * self.out_channels
        out = FinalLayer(self.hidden_size, out_features, name="final_layer")(tokens, c)
        return einops.rearrange(
            out,
            "b (t h w) (r p q c) -> b (t r) (h p) (w q) c",
            t=gt, h=gh, w=gw, r=pt, p=p, q=p,
        )  # fmt: skip
