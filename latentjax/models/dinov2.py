"""DINOv2 vision transformer (Oquab et al. 2023, "DINOv2: Learning Robust Visual Features without
Supervision"), optionally with register tokens (Darcet et al. 2024, "Vision Transformers Need
Registers"), as a frozen feature extractor for representation losses (VA-VAE, REPA).

[B, H, W, 3] ImageNet-normalised pixels -> p x p patches (p = 14) by a strided conv -> + learned
position embedding, resampled bicubically when the patch grid is not the pretraining grid ->
[CLS, registers, patches] -> ``depth`` pre-norm blocks (x + ls1 * attn(norm1(x)), then
x + ls2 * ffn(norm2(x)), LayerScale of Touvron et al. 2021 "Going deeper with Image
Transformers") -> final LayerNorm. The FFN is a GELU MLP (ViT-S/B/L) or SwiGLU (Shazeer 2020;
DINOv2's ViT-g).

Parameter layout (what ``latentjax/convert/dinov2.py`` fills):
- ``cls_token`` [1, 1, D] holds the CLS embedding *plus* its position embedding. Every
  implementation adds the CLS position to the CLS token and to nothing else, and never resamples
  it, so only the sum matters; timm stores it folded the same way for its register models
  (``_convert_dinov2``). Hugging Face, timm and original checkpoints of one network therefore
  convert to identical parameters.
- ``pos_embed`` [1, g*g, D]: the patch positions of the pretraining grid g = image_size // p.
- ``reg_tokens`` [1, R, D]: registers, inserted after CLS and given no position (HF and timm).
- ``patch_embed`` (conv), ``block_{i}/{norm1, attn/{qkv, proj}, ls1, norm2, fc1, fc2, ls2}``
  (SwiGLU: ``gate_proj, up_proj, down_proj`` instead of ``fc1, fc2``), ``norm``.

The module takes pixels already normalised with the ImageNet mean/std, as the references do;
:func:`preprocess` maps latentjax images ([-1, 1], NHWC) to that input.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from latentjax.models.dit import attention
from latentjax.models.layers import conv, dense, layer_norm
from latentjax.parallel.axes import BATCH, EMBED, HEADS, MLP

# (hidden size, depth, heads, FFN) of DINOv2's ViT-S/14, B/14, L/14 and g/14 (the paper's
# architectures; facebookresearch/dinov2 ``vit_small`` ... ``vit_giant2``).
DINOV2_VARIANTS = {
    "S": (384, 12, 6, "mlp"),
    "B": (768, 12, 12, "mlp"),
    "L": (1024, 24, 16, "mlp"),
    "g": (1536, 40, 24, "swiglu"),
}
PATCH_SIZE = 14
PRETRAIN_IMAGE_SIZE = 518  # the released weights' position table is 37 x 37 patches
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# DINOv2's init of its linears and position table; only a fresh (unconverted) model sees it.
TRUNC_NORMAL = nn.initializers.truncated_normal(0.02)


def dinov2_kwargs(variant: str, num_register_tokens: int = 0) -> dict[str, Any]:
    """ "B" (or "B/14") -> the :class:`DINOv2` arguments of the released model. The position
    table is resampled with antialiasing for register models and without it otherwise, as
    transformers' ``Dinov2WithRegistersModel`` and ``Dinov2Model`` do."""
    name = variant.removesuffix(f"/{PATCH_SIZE}")
    if name not in DINOV2_VARIANTS:
        raise ValueError(f"unknown DINOv2 variant {variant!r}; use one of {list(DINOV2_VARIANTS)}")
    hidden, depth, heads, ffn = DINOV2_VARIANTS[name]
    return {
        "hidden_size": hidden,
        "depth": depth,
        "num_heads": heads,
        "ffn_layer": ffn,
        "num_register_tokens": num_register_tokens,
        "interpolate_antialias": num_register_tokens > 0,
    }


def swiglu_hidden(hidden_size: int, mlp_ratio: float) -> int:
    """SwiGLU width: two thirds of the MLP's, rounded up to a multiple of 8 (DINOv2's
    ``SwiGLUFFNFused``; 4096 for ViT-g), so the three matrices hold as many weights as two."""
    return (int(int(hidden_size * mlp_ratio) * 2 / 3) + 7) // 8 * 8


def _keys_kernel(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel (Keys 1981, eq. 15 with free parameter a), in float32."""
    x, a = np.abs(x).astype(np.float32), np.float32(a)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0)).astype(np.float32)


@functools.lru_cache(maxsize=128)
def bicubic_weights(in_size: int, out_size: int, antialias: bool) -> np.ndarray:
    """[out_size, in_size] matrix W such that W @ x resizes x along one axis as PyTorch's
    ``F.interpolate(x, size=..., mode="bicubic", align_corners=False, antialias=...)``.

    Without antialiasing, output i samples the input at s = (i + 1/2) * in/out - 1/2 with the
    Keys kernel, a = -0.75, its four taps clamped to the border. With antialiasing PyTorch follows
    Pillow: a = -0.5 and, when shrinking by r = in/out > 1, the kernel is stretched by r (support
    2r) around (i + 1/2) * r; taps outside the input are dropped and the weights renormalised.
    Coordinates are computed in float32, as PyTorch computes them, which keeps the match at the
    float32 rounding level (tests/test_dinov2.py).
    """
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    out = np.arange(out_size, dtype=f32)
    w = np.zeros((out_size, in_size), np.float32)
    if not antialias:
        src = scale * (out + f32(0.5)) - f32(0.5)
        left = np.floor(src)
        t = src - left
        for k, dist in enumerate((t + 1, t, 1 - t, 2 - t)):
            idx = np.clip(left.astype(np.int64) - 1 + k, 0, in_size - 1)
            np.add.at(w, (np.arange(out_size), idx), _keys_kernel(dist, -0.75))
    else:
        support = f32(2) * scale if scale >= 1 else f32(2)
        stretch = f32(1) / scale if scale >= 1 else f32(1)
        center = scale * (out + f32(0.5))
        # astype truncates toward zero, as the C++ cast in PyTorch's kernel does.
        lo = np.maximum((center - support + f32(0.5)).astype(np.int64), 0)
        hi = np.minimum((center + support + f32(0.5)).astype(np.int64), in_size)
        for i in range(out_size):
            taps = _keys_kernel(
                (np.arange(lo[i], hi[i], dtype=f32) - center[i] + f32(0.5)) * stretch, -0.5
            )
            w[i, lo[i] : hi[i]] = taps / taps.sum()
    w.setflags(write=False)  # cached: shared by every caller
    return w


def resize_bicubic(x: jax.Array, size: tuple[int, int], *, antialias: bool) -> jax.Array:
    """[B, H, W, C] -> [B, h, w, C] by :func:`bicubic_weights` along H and W (PyTorch's bicubic
    ``F.interpolate``, not ``jax.image.resize``, whose cubic kernel has a = -0.5)."""
    _, hgt, wid, _ = x.shape
    if (hgt, wid) == tuple(size):
        return x
    wh = bicubic_weights(hgt, size[0], antialias)
    ww = bicubic_weights(wid, size[1], antialias)
    # HIGHEST: a TPU/GPU default would run this product in bf16/tf32 and move the result.
    return jnp.einsum("hH,wW,bHWc->bhwc", wh, ww, x, precision=jax.lax.Precision.HIGHEST).astype(
        x.dtype
    )


def preprocess(
    images: jax.Array,
    size: int | tuple[int, int] | None = None,
    *,
    antialias: bool = False,
    patch_size: int = PATCH_SIZE,
) -> jax.Array:
    """latentjax images [B, H, W, 3] in [-1, 1] -> DINOv2's input [B, h, w, 3]: [0, 1] pixels
    standardised with the ImageNet mean/std, then resized bicubically (PyTorch's kernel,
    :func:`resize_bicubic`) to ``size``, whose sides must be multiples of the patch size.

    ``size=None`` keeps each side rounded down to a multiple of the patch size (256 -> 252).
    REPA (Yu et al. 2025) instead resizes 256 px images to 224 (the 16 x 16 grid DINOv2 was
    trained at) with ``F.interpolate(mode="bicubic")``, i.e. ``size=224, antialias=False``.
    Standardising first or last is the same: both resize kernels sum to one.
    """
    chex.assert_rank(images, 4)
    _, hgt, wid, _ = images.shape
    if size is None:
        size = (hgt // patch_size * patch_size, wid // patch_size * patch_size)
    elif isinstance(size, int):
        size = (size, size)
    if min(size) < patch_size or size[0] % patch_size or size[1] % patch_size:
        raise ValueError(f"DINOv2 input size {size} is not a multiple of the {patch_size} px patch")
    mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
    std = jnp.asarray(IMAGENET_STD, images.dtype)
    x = ((images + 1) / 2 - mean) / std
    return resize_bicubic(x, tuple(size), antialias=antialias)


def resample_pos_embed(
    table: jax.Array, grid: int, size: tuple[int, int], *, antialias: bool
) -> jax.Array:
    """Patch position table [g*g, D] of a g x g grid -> [h, w, D] for an h x w patch grid.

    As transformers' ``Dinov2Embeddings.interpolate_pos_encoding``: the table is resized to the
    new grid with ``F.interpolate(size=(h, w), mode="bicubic", align_corners=False)`` in float32,
    antialiased for ``Dinov2WithRegistersEmbeddings``; the same grid is returned as is (a resize
    to the same size is the identity for both kernels)."""
    dim = table.shape[-1]
    grid_table = table.reshape(1, grid, grid, dim).astype(jnp.float32)
    out = resize_bicubic(grid_table, size, antialias=antialias)
    return out[0].astype(table.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with a fused [q | k | v] projection (each head-major, as the
    original DINOv2 and timm store it), softmax attention (:func:`latentjax.models.dit.attention`)
    and an output projection."""

    num_heads: int
    qkv_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, L, D]
        b, length, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"hidden size {d} is not divisible by {self.num_heads} heads")
        head_dim = d // self.num_heads
        qkv = dense(
            3 * d, (EMBED, HEADS), kernel_init=TRUNC_NORMAL, use_bias=self.qkv_bias, name="qkv"
        )(x)
        q, k, v = jnp.split(qkv.reshape(b, length, 3 * self.num_heads, head_dim), 3, axis=2)
        q, k, v = (nn.with_logical_constraint(a, (BATCH, None, HEADS, None)) for a in (q, k, v))
        out = nn.with_logical_constraint(attention(q, k, v), (BATCH, None, HEADS, None))
        return dense(d, (HEADS, EMBED), kernel_init=TRUNC_NORMAL, name="proj")(
            out.reshape(b, length, d)
        )


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches."""

    hidden_size: int
    num_heads: int
    mlp_ratio: float = 4.0
    ffn_layer: str = "mlp"  # "mlp" (GELU) or "swiglu"
    layerscale_init: float = 1e-5
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True

    def _layer_scale(self, name: str) -> jax.Array:
        init = nn.initializers.constant(self.layerscale_init)
        return self.param(name, nn.with_logical_partitioning(init, (EMBED,)), (self.hidden_size,))

    def _ffn(self, h: jax.Array) -> jax.Array:
        d = self.hidden_size
        if self.ffn_layer == "mlp":
            h = dense(int(d * self.mlp_ratio), (EMBED, MLP), kernel_init=TRUNC_NORMAL, name="fc1")(
                h
            )
            h = nn.with_logical_constraint(nn.gelu(h, approximate=False), (BATCH, None, MLP))
            return dense(d, (MLP, EMBED), kernel_init=TRUNC_NORMAL, name="fc2")(h)
        if self.ffn_layer == "swiglu":
            # silu(x W_gate) * (x W_up), then W_down (Shazeer 2020, eq. 6). Gate and up are
            # separate kernels so a `tensor` split of the MLP axis keeps each shard's pairs.
            width = swiglu_hidden(d, self.mlp_ratio)
            gate = dense(width, (EMBED, MLP), kernel_init=TRUNC_NORMAL, name="gate_proj")(h)
            up = dense(width, (EMBED, MLP), kernel_init=TRUNC_NORMAL, name="up_proj")(h)
            h = nn.with_logical_constraint(nn.silu(gate) * up, (BATCH, None, MLP))
            return dense(d, (MLP, EMBED), kernel_init=TRUNC_NORMAL, name="down_proj")(h)
        raise ValueError(f"unknown ffn_layer {self.ffn_layer!r}; use 'mlp' or 'swiglu'")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, L, D]
        h = layer_norm(epsilon=self.layer_norm_eps, name="norm1")(x)
        h = Attention(self.num_heads, self.qkv_bias, name="attn")(h)
        x = x + self._layer_scale("ls1") * h
        h = self._ffn(layer_norm(epsilon=self.layer_norm_eps, name="norm2")(x))
        return x + self._layer_scale("ls2") * h


class DINOv2(nn.Module):
    """DINOv2 ViT on [B, H, W, C] ImageNet-normalised pixels (any size of at least one patch;
    pixels beyond the last whole patch are ignored, as by the strided conv of the references).

    ``image_size`` is the side of the pretraining images: the position table covers its
    (image_size // patch_size)^2 patches and is resampled for other grids (see
    :func:`resample_pos_embed`; ``interpolate_antialias`` picks transformers'
    ``Dinov2WithRegistersModel`` behaviour over ``Dinov2Model``'s).
    """

    hidden_size: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    ffn_layer: str = "mlp"
    num_register_tokens: int = 0
    patch_size: int = PATCH_SIZE
    image_size: int = PRETRAIN_IMAGE_SIZE
    layerscale_init: float = 1e-5
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    interpolate_antialias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, return_blocks: Sequence[int] = ()) -> dict[str, Any]:
        """x [B, H, W, C] -> {"cls": [B, D], "registers": [B, R, D], "patch_tokens":
        [B, h, w, D]} after the final norm, with h = H // patch_size, w = W // patch_size.

        ``return_blocks``: indices i (0-based; negative counts from the end) of blocks whose
        output to return, un-normalised, in ``"blocks"`` as ``{i: {"cls", "registers",
        "patch_tokens"}}`` (transformers' ``hidden_states[i + 1]``); ``{}`` when none. They cost
        no extra compute.
        """
        chex.assert_rank(x, 4)
        b, hgt, wid, _ = x.shape
        p, d, regs = self.patch_size, self.hidden_size, self.num_register_tokens
        if hgt < p or wid < p:
            raise ValueError(f"input {hgt}x{wid} is smaller than one {p} px patch")
        wanted = sorted({self._block_index(i) for i in return_blocks})
        grid = self.image_size // p

        tokens = conv(
            d, p, stride=p, padding="VALID", kernel_init=TRUNC_NORMAL, name="patch_embed"
        )(x)
        h, w = tokens.shape[1:3]
        pos = self.param(
            "pos_embed",
            nn.with_logical_partitioning(TRUNC_NORMAL, (None, None, EMBED)),
            (1, grid * grid, d),
        )
        tokens = tokens + resample_pos_embed(
            pos[0], grid, (h, w), antialias=self.interpolate_antialias
        )
        cls = self.param(
            "cls_token", nn.with_logical_partitioning(TRUNC_NORMAL, (None, None, EMBED)), (1, 1, d)
        )
        prefix = [jnp.broadcast_to(cls, (b, 1, d)).astype(tokens.dtype)]
        if regs:
            reg = self.param(
                "reg_tokens",
                nn.with_logical_partitioning(TRUNC_NORMAL, (None, None, EMBED)),
                (1, regs, d),
            )
            prefix.append(jnp.broadcast_to(reg, (b, regs, d)).astype(tokens.dtype))
        seq = jnp.concatenate([*prefix, tokens.reshape(b, h * w, d)], axis=1)
        seq = nn.with_logical_constraint(seq, (BATCH, None, None))

        blocks = {}
        for i in range(self.depth):
            seq = Block(
                d,
                self.num_heads,
                self.mlp_ratio,
                self.ffn_layer,
                self.layerscale_init,
                self.layer_norm_eps,
                self.qkv_bias,
                name=f"block_{i}",
            )(seq)
            if i in wanted:
                blocks[i] = self._split(seq, h, w)
        out = self._split(layer_norm(epsilon=self.layer_norm_eps, name="norm")(seq), h, w)
        out["blocks"] = blocks
        return out

    def _block_index(self, i: int) -> int:
        if not -self.depth <= i < self.depth:
            raise ValueError(f"return_blocks index {i} is out of range for {self.depth} blocks")
        return i % self.depth

    def _split(self, seq: jax.Array, h: int, w: int) -> dict[str, jax.Array]:
        """[B, 1 + R + h*w, D] -> CLS [B, D], registers [B, R, D], patches [B, h, w, D]."""
        regs = self.num_register_tokens
        return {
            "cls": seq[:, 0],
            "registers": seq[:, 1 : 1 + regs],
            "patch_tokens": seq[:, 1 + regs :].reshape(seq.shape[0], h, w, seq.shape[-1]),
        }


def encode(
    model: DINOv2,
    params: Any,
    images: jax.Array,
    *,
    size: int | tuple[int, int] | None = None,
    antialias: bool = False,
    return_blocks: Sequence[int] = (),
) -> dict[str, Any]:
    """latentjax images [B, H, W, 3] in [-1, 1] -> DINOv2 features (:func:`preprocess`, then the
    model). Pure; :func:`make_encoder` jits it."""
    x = preprocess(images, size, antialias=antialias, patch_size=model.patch_size)
    return model.apply(params, x, return_blocks=tuple(return_blocks))


def make_encoder(
    model: DINOv2,
    *,
    size: int | tuple[int, int] | None = None,
    antialias: bool = False,
    return_blocks: Sequence[int] = (),
) -> Callable[[Any, jax.Array], dict[str, Any]]:
    """A jitted ``(params, images) -> features`` of :func:`encode`; compiled once per input
    shape (the resize and position-table matrices are built at trace time from static shapes)."""
    return jax.jit(
        functools.partial(
            encode, model, size=size, antialias=antialias, return_blocks=tuple(return_blocks)
        )
    )
