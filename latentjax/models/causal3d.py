"""Causal spatio-temporal building blocks for video autoencoders, NTHWC ([B, T, H, W, C]).

They follow the Wan 2.1 VAE (Wan team 2025, "Wan: Open and Advanced Large-Scale Video Generative
Models", arXiv:2503.20314, section on Wan-VAE; reference code ``wan/modules/vae.py`` in
Wan-Video/Wan2.1 and diffusers' ``models/autoencoders/autoencoder_kl_wan.py``) closely enough that
its weights load unchanged, but the streaming state is explicit instead of a mutable list.

**Streaming contract.** Every block with a temporal receptive field maps
``(x_chunk, cache) -> (y_chunk, new_cache)``. ``cache=None`` means "this chunk starts the video";
the returned cache is a pytree of fixed-shape arrays (the last input frames each causal
convolution needs), so the chunk after it can be processed alone, and a ``lax.scan`` can carry it.
Processing a video chunk by chunk then gives the same result as processing it in one chunk:
every temporal operation looks only at its own and earlier frames, and the cache holds exactly
the earlier frames it needs.

**Causal padding.** A temporal kernel of ``kt`` frames with stride 1 sees ``kt - 1`` frames of
the past and none of the future; before the first frame the past is zeros, as Wan's
``CausalConv3d`` pads ``2 * padding`` zero frames in front and none behind. A zero cache is
exactly that padding, so "start of the video" needs no special case in the convolution.

**The first frame is special in the resampling layers** (Wan's design, so a single image is a
one-frame video with its own latent frame): a temporal downsampling layer passes the first frame
through unchanged and only halves the frames after it (``1 + 2k -> 1 + k``), and a temporal
upsampling layer leaves the first latent frame single and doubles the frames after it
(``1 + k -> 1 + 2k``). Both therefore require a video's first chunk to be one frame.

Parameter names and the weights they hold (PyTorch layouts in brackets, for the converters):
``CausalConv3d``: ``kernel`` [kt, kh, kw, in, out] ([out, in, kt, kh, kw]) and ``bias``;
``ChannelRMSNorm``: ``scale`` [C] (Wan's ``gamma``, [C, 1, 1(, 1)]).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from latentjax.models.layers import LECUN_NORMAL, conv, conv_over_frames
from latentjax.parallel.axes import CONV_IN, CONV_OUT, NORM

Cache = Any  # a pytree of arrays (dicts keyed by submodule name), or None at the video's start


def sub_cache(cache: Mapping | None, name: str) -> Cache:
    """The part of a block's cache that belongs to its submodule ``name`` (None at the start)."""
    return None if cache is None else cache[name]


def _check_first_chunk(x: jax.Array, what: str) -> None:
    if x.shape[1] != 1:
        raise ValueError(
            f"{what}: a video's first chunk must be its first frame alone (got {x.shape[1]} "
            "frames); the first frame is resampled on its own, as in Wan's VAE"
        )


class CausalConv3d(nn.Module):
    """A 3-D convolution that is causal in time and "same"-padded in space.

    ``(x [B, T, H, W, Cin], cache [B, P, H, W, Cin] | None) -> (y [B, T / s, H, W, Cout],
    new_cache [B, P, H, W, Cin] | None)`` with ``P = kt - s`` past frames (``s`` the temporal
    stride; T must be a multiple of it). The output frame ``i`` sees input frames ``s*i + s - kt
    .. s*i + s - 1`` of the whole video, i.e. the frames up to the last one of its own stride
    window; frames before the video are zeros (``cache=None``). A kernel of one frame needs no
    cache and returns None.
    """

    features: int
    kernel_size: tuple[int, int, int] = (3, 3, 3)
    time_stride: int = 1

    @property
    def past_frames(self) -> int:
        return self.kernel_size[0] - self.time_stride

    def empty_cache(self, x: jax.Array) -> jax.Array | None:
        """The cache at the start of a video for input chunks like ``x``: P zero frames."""
        if self.past_frames == 0:
            return None
        b, _, h, w, c = x.shape
        return jnp.zeros((b, self.past_frames, h, w, c), x.dtype)

    @nn.compact
    def __call__(self, x: jax.Array, cache: jax.Array | None = None):
        kt, kh, kw = self.kernel_size
        s = self.time_stride
        if kt < s:
            raise ValueError(f"CausalConv3d: kernel {kt} frames is shorter than stride {s}")
        if x.shape[1] % s:
            raise ValueError(f"CausalConv3d: {x.shape[1]} frames are not a multiple of {s}")
        p = self.past_frames
        if p:
            if cache is None:
                cache = self.empty_cache(x)
            x = jnp.concatenate([cache, x], axis=1)  # [B, P + T, H, W, Cin]
            new_cache = x[:, x.shape[1] - p :]
        else:
            new_cache = None
        cin = x.shape[-1]
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(LECUN_NORMAL, (None, None, None, CONV_IN, CONV_OUT)),
            (kt, kh, kw, cin, self.features),
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), (CONV_OUT,)),
            (self.features,),
        )
        # Time is already padded by the cache; space symmetrically, as Wan's padding=1 for 3x3.
        pad = ((kh // 2, kh // 2), (kw // 2, kw // 2))
        y = conv_over_frames(x, kernel, s, 1, pad)
        return y + bias, new_cache


class ChannelRMSNorm(nn.Module):
    """Wan's ``RMS_norm``: x / max(|x|_2, eps) * sqrt(C) * scale over the channel axis, i.e. an
    RMS norm (Zhang & Sennrich 2019) without mean subtraction or bias, per position and frame.
    Normalising each frame on its own keeps it causal (a GroupNorm over time would not be)."""

    eps: float = 1e-12  # torch.nn.functional.normalize's default, which Wan uses

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [..., C]
        c = x.shape[-1]
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones_init(), (NORM,)), (c,)
        )
        # max(|x|, eps) as sqrt(max(|x|^2, eps^2)): the same value, and a finite gradient at 0.
        # The sum of squares in float32 whatever the activations' dtype, as diffusers does for
        # half precision.
        sq = jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
        inv = jax.lax.rsqrt(jnp.maximum(sq, self.eps**2)).astype(x.dtype)
        return x * inv * (c**0.5) * scale.astype(x.dtype)


class ResidualBlock3d(nn.Module):
    """RMSNorm -> SiLU -> causal conv 3x3x3, twice, plus a 1x1x1 conv shortcut when the width
    changes (Wan's ``ResidualBlock``; its dropout is 0 in the released model and left out).

    ``(x [B, T, H, W, Cin], cache) -> ([B, T, H, W, Cout], cache {"conv1", "conv2"})``."""

    out_channels: int

    @nn.compact
    def __call__(self, x: jax.Array, cache: Cache = None):
        h = nn.silu(ChannelRMSNorm(name="norm1")(x))
        h, c1 = CausalConv3d(self.out_channels, name="conv1")(h, sub_cache(cache, "conv1"))
        h = nn.silu(ChannelRMSNorm(name="norm2")(h))
        h, c2 = CausalConv3d(self.out_channels, name="conv2")(h, sub_cache(cache, "conv2"))
        if x.shape[-1] != self.out_channels:
            x, _ = CausalConv3d(self.out_channels, (1, 1, 1), name="shortcut")(x)
        return x + h, {"conv1": c1, "conv2": c2}


class FrameAttention(nn.Module):
    """Single-head self-attention over the H*W positions of each frame on its own, with a
    residual (Wan's ``AttentionBlock``): per frame, so it stays causal and needs no cache.
    ``qkv`` is one 1x1 conv to 3C channels split as (q, k, v), as Wan's ``to_qkv``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, H, W, C]
        b, t, h, w, c = x.shape
        frames = ChannelRMSNorm(name="norm")(x).reshape(b * t, h, w, c)
        qkv = conv(3 * c, 1, name="qkv")(frames).reshape(b * t, h * w, 1, 3 * c)
        q, k, v = jnp.split(qkv, 3, axis=-1)  # each [BT, HW, 1, C]: one head of width C
        out = jax.nn.dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v
        out = conv(c, 1, name="proj")(out.reshape(b * t, h, w, c))
        return x + out.reshape(b, t, h, w, c)


class Downsample3d(nn.Module):
    """Halves H and W (zero pad bottom/right, 3x3 conv, stride 2: Wan's ``downsample2d``) and,
    when ``temporal``, the frames after the first (Wan's ``downsample3d``): a (3, 1, 1) conv of
    stride 2 whose cache is the previous frame, so output frame ``j >= 1`` sees input frames
    ``2j - 2 .. 2j``, and frame 0 passes through.

    ``(x [B, T, H, W, C], cache) -> ([B, T', H/2, W/2, C], cache {"time_conv"} | {})`` with
    ``T' = T`` (first chunk, T = 1) or ``T / 2`` (later chunks, T even)."""

    temporal: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, cache: Cache = None):
        b, t, h, w, c = x.shape
        y = conv(c, 3, stride=2, padding=((0, 1), (0, 1)), name="conv")(x.reshape(b * t, h, w, c))
        y = y.reshape(b, t, *y.shape[1:])  # [B, T, H/2, W/2, C]
        if not self.temporal:
            return y, {}
        time_conv = CausalConv3d(c, (3, 1, 1), time_stride=2, name="time_conv")
        if cache is None:
            _check_first_chunk(x, "Downsample3d")
            if self.is_initializing():  # the parameters exist whatever clip init sees
                time_conv(jnp.concatenate([y, y], axis=1))
            return y, {"time_conv": y[:, -1:]}
        y, new = time_conv(y, cache["time_conv"])  # [B, T/2, H/2, W/2, C]
        return y, {"time_conv": new}


class Upsample3d(nn.Module):
    """Doubles the frames after the first when ``temporal`` (Wan's ``upsample3d``: a causal
    (3, 1, 1) conv to 2C channels whose halves become two consecutive frames), then doubles H
    and W (nearest neighbour, 3x3 conv to ``out_channels``: Wan's ``upsample2d``).

    ``(x [B, T, H, W, C], cache) -> ([B, T', 2H, 2W, out], cache {"time_conv"} | {})`` with
    ``T' = T`` (first chunk, T = 1) or ``2T`` (later chunks). On the first latent frame Wan skips
    the time conv and starts the next chunk from zeros, not from that frame: so do we."""

    out_channels: int
    temporal: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, cache: Cache = None):
        b, _, h, w, c = x.shape
        new_cache = {}
        if self.temporal:
            time_conv = CausalConv3d(2 * c, (3, 1, 1), name="time_conv")
            if cache is None:
                _check_first_chunk(x, "Upsample3d")
                if self.is_initializing():
                    time_conv(x)
                new_cache = {"time_conv": time_conv.empty_cache(x)}
            else:
                y, new_cache["time_conv"] = time_conv(x, cache["time_conv"])  # [B, T, H, W, 2C]
                # Channel halves [2, C] -> frames: output frame 2i + s is half s of frame i.
                t = y.shape[1]
                y = y.reshape(b, t, h, w, 2, c)
                x = jnp.moveaxis(y, 4, 2).reshape(b, 2 * t, h, w, c)
        t = x.shape[1]
        x = jnp.repeat(jnp.repeat(x.reshape(b * t, h, w, c), 2, axis=1), 2, axis=2)
        x = conv(self.out_channels, 3, name="conv")(x)  # [BT, 2H, 2W, out]
        return x.reshape(b, t, 2 * h, 2 * w, self.out_channels), new_cache
