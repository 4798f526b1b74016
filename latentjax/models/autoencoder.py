"""The Stable-Diffusion-style convolutional autoencoder (Rombach et al. 2022, latent-diffusion's
``Encoder``/``Decoder``), NHWC.

Parameter names follow the reference layout so a converter maps them one to one:

| latent-diffusion (PyTorch)        | here (linen)                         |
| --------------------------------- | ------------------------------------ |
| ``encoder.down.{i}.block.{j}``    | ``encoder/down_{i}_block_{j}``       |
| ``encoder.down.{i}.attn.{j}``     | ``encoder/down_{i}_attn_{j}``        |
| ``encoder.down.{i}.downsample``   | ``encoder/down_{i}_downsample/conv`` |
| ``*.mid.block_1/attn_1/block_2``  | ``*/mid_block_1``, ``mid_attn_1``, … |
| ``decoder.up.{i}.block.{j}``      | ``decoder/up_{i}_block_{j}``         |
| ``decoder.up.{i}.upsample``       | ``decoder/up_{i}_upsample/conv``     |
| ``*.norm_out``, ``*.conv_out``    | same names                           |
| ``quant_conv``, ``post_quant_conv`` | same names                         |

Inside blocks: ``norm1, conv1, norm2, conv2, nin_shortcut`` and ``norm, q, k, v, proj_out``.
Decoder levels are indexed as in the reference (``up_{i}`` for level ``i``, run from the
deepest level up).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from latentjax.models.bottleneck import DiagonalGaussian
from latentjax.models.layers import conv, group_norm


class ResnetBlock(nn.Module):
    out_channels: int
    num_groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C]
        h = nn.silu(group_norm(x.shape[-1], self.num_groups, name="norm1")(x))
        h = conv(self.out_channels, 3, name="conv1")(h)
        h = nn.silu(group_norm(self.out_channels, self.num_groups, name="norm2")(h))
        h = conv(self.out_channels, 3, name="conv2")(h)
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1, name="nin_shortcut")(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, with a residual."""

    num_groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C]
        b, hgt, wid, c = x.shape
        h = group_norm(c, self.num_groups, name="norm")(x)
        q, k, v = (conv(c, 1, name=n)(h).reshape(b, hgt * wid, 1, c) for n in ("q", "k", "v"))
        out = jax.nn.dot_product_attention(q, k, v)  # [B, HW, 1, C], softmax(qk^T / sqrt(C)) v
        return x + conv(c, 1, name="proj_out")(out.reshape(b, hgt, wid, c))


class Downsample(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # Stride-2 3x3 conv with padding only at the bottom/right, as in the reference.
        return conv(x.shape[-1], 3, stride=2, padding=((0, 1), (0, 1)), name="conv")(x)


class Upsample(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest-neighbour x2
        return conv(x.shape[-1], 3, name="conv")(x)


def _mid(x: jax.Array, channels: int, num_groups: int) -> jax.Array:
    """The middle of both networks: ResNet, attention, ResNet (created in the caller's scope)."""
    x = ResnetBlock(channels, num_groups, name="mid_block_1")(x)
    x = AttnBlock(num_groups, name="mid_attn_1")(x)
    return ResnetBlock(channels, num_groups, name="mid_block_2")(x)


class Encoder(nn.Module):
    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    z_channels: int
    double_z: bool = True
    attn_resolutions: Sequence[int] = ()
    num_groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, H/f, W/f, (2)z]
        h = conv(self.ch, 3, name="conv_in")(x)
        for i, mult in enumerate(self.ch_mult):
            for j in range(self.num_res_blocks):
                h = ResnetBlock(self.ch * mult, self.num_groups, name=f"down_{i}_block_{j}")(h)
                if h.shape[1] in self.attn_resolutions:
                    h = AttnBlock(self.num_groups, name=f"down_{i}_attn_{j}")(h)
            if i != len(self.ch_mult) - 1:
                h = Downsample(name=f"down_{i}_downsample")(h)
        h = _mid(h, h.shape[-1], self.num_groups)
        h = nn.silu(group_norm(h.shape[-1], self.num_groups, name="norm_out")(h))
        out = 2 * self.z_channels if self.double_z else self.z_channels
        return conv(out, 3, name="conv_out")(h)


class Decoder(nn.Module):
    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    out_channels: int
    attn_resolutions: Sequence[int] = ()
    num_groups: int = 32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:  # [B, h, w, z] -> [B, h*f, w*f, out]
        h = conv(self.ch * self.ch_mult[-1], 3, name="conv_in")(z)
        h = _mid(h, h.shape[-1], self.num_groups)
        for i in reversed(range(len(self.ch_mult))):
            for j in range(self.num_res_blocks + 1):
                block = ResnetBlock(
                    self.ch * self.ch_mult[i], self.num_groups, name=f"up_{i}_block_{j}"
                )
                h = block(h)
                if h.shape[1] in self.attn_resolutions:
                    h = AttnBlock(self.num_groups, name=f"up_{i}_attn_{j}")(h)
            if i != 0:
                h = Upsample(name=f"up_{i}_upsample")(h)
        h = nn.silu(group_norm(h.shape[-1], self.num_groups, name="norm_out")(h))
        return conv(self.out_channels, 3, name="conv_out")(h)


class AutoencoderKL(nn.Module):
    """Encoder -> diagonal Gaussian -> decoder. ``embed_dim`` adds Stable Diffusion's 1x1
    ``quant_conv``/``post_quant_conv`` and makes the latent ``embed_dim`` channels wide."""

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    z_channels: int
    in_channels: int
    attn_resolutions: Sequence[int] = ()
    num_groups: int = 32
    embed_dim: int | None = None

    def setup(self):
        self.encoder = Encoder(
            self.ch,
            tuple(self.ch_mult),
            self.num_res_blocks,
            self.z_channels,
            double_z=True,
            attn_resolutions=tuple(self.attn_resolutions),
            num_groups=self.num_groups,
        )
        self.decoder = Decoder(
            self.ch,
            tuple(self.ch_mult),
            self.num_res_blocks,
            self.in_channels,
            attn_resolutions=tuple(self.attn_resolutions),
            num_groups=self.num_groups,
        )
        if self.embed_dim:
            self.quant_conv = conv(2 * self.embed_dim, 1, name="quant_conv")
            self.post_quant_conv = conv(self.z_channels, 1, name="post_quant_conv")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def encode(self, x: jax.Array) -> DiagonalGaussian:  # x: [B, H, W, C] in [-1, 1]
        moments = self.encoder(x)
        if self.embed_dim:
            moments = self.quant_conv(moments)
        return DiagonalGaussian.from_moments(moments)

    def decode(self, z: jax.Array) -> jax.Array:  # z: [B, h, w, latent channels]
        if self.embed_dim:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def __call__(self, x: jax.Array, sample: bool = True) -> tuple[jax.Array, DiagonalGaussian]:
        posterior = self.encode(x)
        z = posterior.sample(self.make_rng("sample")) if sample else posterior.mode()
        return self.decode(z), posterior
