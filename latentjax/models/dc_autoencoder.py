"""The deep compression autoencoder (DC-AE; Chen et al. 2024, "Deep Compression Autoencoder for
Efficient High-Resolution Diffusion Models", arXiv:2410.10733), NHWC, as diffusers'
``AutoencoderDC`` (``models/autoencoders/autoencoder_dc.py``) computes it, for converted weights.

DC-AE reaches f32/f64 with many latent channels through two ideas: *residual autoencoding*,
whose down/up-sampling blocks add a parameter-free shortcut (space-to-channel, then an average
over channel groups; or channel repetition, then channel-to-space) to the learned resampling,
and a deterministic latent (no posterior variance). The blocks are plain ResNet blocks at the
high resolutions and EfficientViT blocks (multi-scale ReLU linear attention, then a gated
depthwise MLP) at the low ones.

Parameter tree (linen paths; ``latentjax/convert/dc_ae.py`` maps diffusers' names):

- ``encoder/conv_in`` (a conv, or a ``DownBlock`` without shortcut when level 0 has no blocks);
  ``encoder/down_{i}/block_{j}`` and ``encoder/down_{i}/downsample``; ``encoder/conv_out``;
- ``decoder/conv_in``; ``decoder/up_{i}/upsample`` (to level i from level i + 1) and
  ``decoder/up_{i}/block_{j}``; ``decoder/norm_out``; ``decoder/conv_out`` (a conv, or an
  ``UpBlock`` without shortcut);
- ResNet block: ``conv1, conv2, norm``; EfficientViT block: ``attn/{to_q, to_k, to_v,
  proj_in_{s}, proj_out_{s}, to_out, norm_out}``, ``mlp/{conv_inverted, conv_depth, conv_point,
  norm}``; a resampling block: ``conv``.

Channel orders follow PyTorch's so that weights map without permutation: space-to-channel puts
channel c's 2 x 2 block at c*4 + i*2 + j (``F.pixel_unshuffle``), and the attention's heads are
read from the concatenated [q | k | v | multi-scale copies] channels in consecutive groups of
3 x head_dim (as the reference's reshape does).
"""

from __future__ import annotations

from collections.abc import Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from latentjax.models.bottleneck import Deterministic
from latentjax.models.layers import FrozenBatchNorm, RMSNorm, activation, conv, dense
from latentjax.parallel.axes import CONV_IN, CONV_OUT

NORM_TYPES = ("rms_norm", "batch_norm")
BLOCK_TYPES = ("ResBlock", "EfficientViTBlock")


def pixel_unshuffle(x: jax.Array, r: int = 2) -> jax.Array:
    """[B, H*r, W*r, C] -> [B, H, W, C*r*r], channel order c*r*r + i*r + j (PyTorch's)."""
    return einops.rearrange(x, "b (h i) (w j) c -> b h w (c i j)", i=r, j=r)


def pixel_shuffle(x: jax.Array, r: int = 2) -> jax.Array:
    """The inverse of :func:`pixel_unshuffle`: [B, H, W, C*r*r] -> [B, H*r, W*r, C]."""
    return einops.rearrange(x, "b h w (c i j) -> b (h i) (w j) c", i=r, j=r)


def group_mean(x: jax.Array, group: int) -> jax.Array:
    """Averages consecutive channels in groups of ``group``: [..., C] -> [..., C / group]."""
    return x.reshape(*x.shape[:-1], x.shape[-1] // group, group).mean(axis=-1)


def _norm(kind: str, name: str) -> nn.Module:
    if kind == "rms_norm":
        return RMSNorm(1e-5, use_bias=True, name=name)
    if kind == "batch_norm":
        return FrozenBatchNorm(1e-5, name=name)
    raise ValueError(f"unknown norm {kind!r}; use one of {NORM_TYPES}")


def _same_padding(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return ((kernel // 2, kernel // 2),) * 2


class ResBlock(nn.Module):
    """conv3x3 -> activation -> conv3x3 (no bias) -> norm, plus the input."""

    norm_type: str = "rms_norm"
    act: str = "silu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C]
        c = x.shape[-1]
        h = activation(self.act)(conv(c, 3, name="conv1")(x))
        h = conv(c, 3, use_bias=False, name="conv2")(h)
        return x + _norm(self.norm_type, "norm")(h)


class MultiscaleLinearAttention(nn.Module):
    """ReLU linear attention (Katharopoulos et al. 2020) over q, k, v and depthwise-convolved
    copies of them at each kernel size in ``scales`` (EfficientViT's multi-scale tokens), then
    a linear map, a norm and the input. Per head: out_n = sum_m v_m (k_m . q_n) / (sum_m k_m .
    q_n + eps) with q, k after ReLU, computed as q_n (K^T V) so the cost is linear in positions.
    diffusers switches to the quadratic form on maps of at most ``head_dim`` positions; the two
    are the same function up to rounding."""

    head_dim: int
    scales: Sequence[int] = (5,)
    norm_type: str = "rms_norm"
    eps: float = 1e-15

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C]
        b, hgt, wid, c = x.shape
        heads = c // self.head_dim
        inner = heads * self.head_dim
        axes = (CONV_IN, CONV_OUT)
        qkv = jnp.concatenate(
            [dense(inner, axes, use_bias=False, name=f"to_{n}")(x) for n in "qkv"], axis=-1
        )  # [B, H, W, 3 inner]
        tokens = [qkv]
        for s, k in enumerate(self.scales):
            h = conv(
                3 * inner,
                k,
                padding=_same_padding(k),
                groups=3 * inner,
                use_bias=False,
                name=f"proj_in_{s}",
            )(qkv)
            tokens.append(
                conv(3 * inner, 1, groups=3 * heads, use_bias=False, name=f"proj_out_{s}")(h)
            )
        # Groups of 3 * head_dim consecutive channels are the heads: [B, N, G, 3 d].
        h = jnp.concatenate(tokens, axis=-1).reshape(b, hgt * wid, -1, 3 * self.head_dim)
        q, k, v = jnp.split(h.astype(jnp.float32), 3, axis=-1)
        q, k = nn.relu(q), nn.relu(k)
        kv = jnp.einsum("bmgd,bmge->bgde", k, v)
        num = jnp.einsum("bngd,bgde->bnge", q, kv)
        den = jnp.einsum("bngd,bgd->bng", q, k.sum(axis=1))
        out = (num / (den[..., None] + self.eps)).astype(x.dtype).reshape(b, hgt, wid, -1)
        out = dense(c, axes, use_bias=False, name="to_out")(out)
        return x + _norm(self.norm_type, "norm_out")(out)


class GLUMBConv(nn.Module):
    """The EfficientViT block's MLP: 1x1 conv to 8C, SiLU, depthwise 3x3, a SiLU gate halving
    the width, 1x1 conv back to C (no bias), RMSNorm, plus the input."""

    expand: int = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C]
        c = x.shape[-1]
        wide = 2 * self.expand * c
        h = nn.silu(conv(wide, 1, name="conv_inverted")(x))
        h = conv(wide, 3, groups=wide, name="conv_depth")(h)
        h, gate = jnp.split(h, 2, axis=-1)
        h = conv(c, 1, use_bias=False, name="conv_point")(h * nn.silu(gate))
        return x + RMSNorm(1e-5, use_bias=True, name="norm")(h)


class EfficientViTBlock(nn.Module):
    head_dim: int
    scales: Sequence[int] = (5,)
    norm_type: str = "rms_norm"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = MultiscaleLinearAttention(
            self.head_dim, tuple(self.scales), self.norm_type, name="attn"
        )(x)
        return GLUMBConv(name="mlp")(x)


def _block(kind: str, head_dim: int, scales, norm_type: str, act: str, name: str) -> nn.Module:
    if kind == "ResBlock":
        return ResBlock(norm_type, act, name=name)
    if kind == "EfficientViTBlock":
        return EfficientViTBlock(head_dim, tuple(scales), norm_type, name=name)
    raise ValueError(f"unknown DC-AE block {kind!r}; use one of {BLOCK_TYPES}")


class DownBlock(nn.Module):
    """Halves H and W into ``out_channels``: a conv then space-to-channel (``pixel_unshuffle``)
    or a stride-2 conv, plus (``shortcut``) the input's space-to-channel averaged over groups of
    channels: residual autoencoding's non-parametric shortcut (Chen et al. 2024, sec. 3.2)."""

    out_channels: int
    pixel_unshuffle: bool = True
    shortcut: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, H/2, W/2, out]
        if self.pixel_unshuffle:
            h = pixel_unshuffle(conv(self.out_channels // 4, 3, name="conv")(x))
        else:
            h = conv(self.out_channels, 3, stride=2, padding=_same_padding(3), name="conv")(x)
        if self.shortcut:
            h = h + group_mean(pixel_unshuffle(x), 4 * x.shape[-1] // self.out_channels)
        return h


class UpBlock(nn.Module):
    """Doubles H and W into ``out_channels``: a conv then channel-to-space (``pixel_shuffle``)
    or nearest upsampling then a conv, plus (``shortcut``) the input with each channel repeated,
    then channel-to-space (the up-sampling side of residual autoencoding)."""

    out_channels: int
    interpolate: bool = False
    shortcut: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, 2H, 2W, out]
        if self.interpolate:
            up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
            h = conv(self.out_channels, 3, name="conv")(up)
        else:
            h = pixel_shuffle(conv(4 * self.out_channels, 3, name="conv")(x))
        if self.shortcut:
            repeats = 4 * self.out_channels // x.shape[-1]
            h = h + pixel_shuffle(jnp.repeat(x, repeats, axis=-1))
        return h


class Level(nn.Module):
    """One resolution: ``num_blocks`` blocks with the downsampling after them (encoder), or
    the upsampling before them (decoder)."""

    block_type: str
    num_blocks: int
    head_dim: int
    scales: Sequence[int] = ()
    norm_type: str = "rms_norm"
    act: str = "silu"
    down_to: int = 0  # > 0: a DownBlock to this width after the blocks
    up_from: bool = False  # an UpBlock (to this level's width) before the blocks
    width: int = 0
    pixel_unshuffle: bool = True
    interpolate: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.up_from:
            x = UpBlock(self.width, self.interpolate, name="upsample")(x)
        for j in range(self.num_blocks):
            block = _block(
                self.block_type, self.head_dim, self.scales, self.norm_type, self.act, f"block_{j}"
            )
            x = block(x)
        if self.down_to:
            x = DownBlock(self.down_to, self.pixel_unshuffle, name="downsample")(x)
        return x


class DCEncoder(nn.Module):
    latent_channels: int
    head_dim: int
    block_types: Sequence[str]
    channels: Sequence[int]
    layers: Sequence[int]
    qkv_multiscales: Sequence[Sequence[int]]
    pixel_unshuffle: bool = True
    out_shortcut: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, H/f, W/f, latent]
        n, ch = len(self.channels), tuple(self.channels)
        if self.layers[0] > 0:
            h = conv(ch[0], 3, name="conv_in")(x)
        else:  # level 0 has no blocks: its downsampling is the input conv
            h = DownBlock(ch[1], self.pixel_unshuffle, shortcut=False, name="conv_in")(x)
        for i in range(n):
            h = Level(
                self.block_types[i],
                self.layers[i],
                self.head_dim,
                tuple(self.qkv_multiscales[i]),
                down_to=ch[i + 1] if i < n - 1 and self.layers[i] > 0 else 0,
                pixel_unshuffle=self.pixel_unshuffle,
                name=f"down_{i}",
            )(h)
        out = conv(self.latent_channels, 3, name="conv_out")(h)
        if self.out_shortcut:
            out = out + group_mean(h, h.shape[-1] // self.latent_channels)
        return out


class DCDecoder(nn.Module):
    out_channels: int
    head_dim: int
    block_types: Sequence[str]
    channels: Sequence[int]
    layers: Sequence[int]
    qkv_multiscales: Sequence[Sequence[int]]
    norm_types: Sequence[str]
    acts: Sequence[str]
    interpolate: bool = False
    in_shortcut: bool = True
    conv_act: str = "relu"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:  # [B, h, w, latent] -> [B, h*f, w*f, C]
        n, ch = len(self.channels), tuple(self.channels)
        h = conv(ch[-1], 3, name="conv_in")(z)
        if self.in_shortcut:
            h = h + jnp.repeat(z, ch[-1] // z.shape[-1], axis=-1)
        for i in reversed(range(n)):
            h = Level(
                self.block_types[i],
                self.layers[i],
                self.head_dim,
                tuple(self.qkv_multiscales[i]),
                self.norm_types[i],
                self.acts[i],
                up_from=i < n - 1 and self.layers[i] > 0,
                width=ch[i],
                interpolate=self.interpolate,
                name=f"up_{i}",
            )(h)
        h = activation(self.conv_act)(RMSNorm(1e-5, use_bias=True, name="norm_out")(h))
        if self.layers[0] > 0:
            return conv(self.out_channels, 3, name="conv_out")(h)
        return UpBlock(self.out_channels, self.interpolate, shortcut=False, name="conv_out")(h)


class DCAutoencoder(nn.Module):
    """DC-AE: image [B, H, W, C] in [-1, 1] <-> deterministic latent [B, H/f, W/f,
    latent_channels], f = 2 ** (len(encoder_channels) - 1). Same interface as
    ``AutoencoderKL``: ``encode`` returns a ``Deterministic`` posterior, ``decode`` an image,
    ``__call__`` both. Per-level tuples (block types, widths, blocks, attention kernel sizes,
    decoder norms and activations) have one entry per level, as diffusers' config."""

    in_channels: int
    latent_channels: int
    head_dim: int
    encoder_block_types: Sequence[str]
    decoder_block_types: Sequence[str]
    encoder_channels: Sequence[int]
    decoder_channels: Sequence[int]
    encoder_layers: Sequence[int]
    decoder_layers: Sequence[int]
    encoder_qkv_multiscales: Sequence[Sequence[int]]
    decoder_qkv_multiscales: Sequence[Sequence[int]]
    decoder_norm_types: Sequence[str]
    decoder_acts: Sequence[str]
    pixel_unshuffle: bool = True  # else stride-2 convs
    interpolate: bool = False  # else pixel_shuffle
    encoder_out_shortcut: bool = True
    decoder_in_shortcut: bool = True
    decoder_conv_act: str = "relu"

    def setup(self):
        self.encoder = DCEncoder(
            self.latent_channels,
            self.head_dim,
            tuple(self.encoder_block_types),
            tuple(self.encoder_channels),
            tuple(self.encoder_layers),
            tuple(tuple(s) for s in self.encoder_qkv_multiscales),
            self.pixel_unshuffle,
            self.encoder_out_shortcut,
        )
        self.decoder = DCDecoder(
            self.in_channels,
            self.head_dim,
            tuple(self.decoder_block_types),
            tuple(self.decoder_channels),
            tuple(self.decoder_layers),
            tuple(tuple(s) for s in self.decoder_qkv_multiscales),
            tuple(self.decoder_norm_types),
            tuple(self.decoder_acts),
            self.interpolate,
            self.decoder_in_shortcut,
            self.decoder_conv_act,
        )

    @property
    def bottleneck(self) -> str:
        return "ae"  # a deterministic latent

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.encoder_channels) - 1)

    def encode(self, x: jax.Array) -> Deterministic:  # [B, H, W, C] -> posterior
        z = self.encoder(x)
        return Deterministic(mean=z, indices=jnp.full(z.shape[:-1], -1, jnp.int32), losses={})

    def decode(self, z: jax.Array) -> jax.Array:  # [B, h, w, latent] -> [B, H, W, C]
        return self.decoder(z)

    def __call__(self, x: jax.Array, sample: bool = True) -> tuple[jax.Array, Deterministic]:
        del sample  # deterministic: no posterior sample to draw
        posterior = self.encode(x)
        return self.decode(posterior.mode()), posterior
