"""The Stable-Diffusion-style convolutional autoencoder (Rombach et al. 2022, latent-diffusion's
``Encoder``/``Decoder`` in ``ldm/modules/diffusionmodules/model.py``), NHWC.

Parameter names follow the reference layout so a weight converter maps them one to one: a
PyTorch key becomes a linen path by joining each ``ModuleList`` index to the name before it
(``down.1.block.0`` -> ``down_1/block_0``) and replacing the remaining dots by ``/``.

| latent-diffusion / diffusers-original (PyTorch) | here (linen params path)          |
| ----------------------------------------------- | --------------------------------- |
| ``encoder.conv_in``                             | ``encoder/conv_in``               |
| ``encoder.down.{i}.block.{j}.{norm1,conv1,...}``| ``encoder/down_{i}/block_{j}/...``|
| ``encoder.down.{i}.attn.{j}.{norm,q,k,v,proj_out}`` | ``encoder/down_{i}/attn_{j}/...`` |
| ``encoder.down.{i}.downsample.conv``            | ``encoder/down_{i}/downsample/conv`` |
| ``{en,de}coder.mid.{block_1,attn_1,block_2}``   | ``{en,de}coder/mid/{block_1,attn_1,block_2}`` |
| ``decoder.up.{i}.block.{j}`` / ``.attn.{j}``    | ``decoder/up_{i}/block_{j}`` / ``attn_{j}`` |
| ``decoder.up.{i}.upsample.conv``                | ``decoder/up_{i}/upsample/conv``  |
| ``{en,de}coder.norm_out``, ``.conv_out``        | same names                        |
| ``quant_conv``, ``post_quant_conv``             | same names                        |
| ``quantize.embedding`` (taming VQGAN)           | ``quantize/embedding``            |

Inside a ``ResnetBlock``: ``norm1, conv1, norm2, conv2, nin_shortcut``; inside an ``AttnBlock``:
``norm, q, k, v, proj_out`` (1x1 convs, as the reference). Decoder levels keep the reference's
indices: ``up_{i}`` is level ``i`` and they run from the deepest level up. Weights convert by
transposing conv kernels [out, in, kh, kw] -> [kh, kw, in, out]; GroupNorm ``weight`` is
``scale``.

Attention is placed by spatial size, as in the reference: ``attn_resolutions=(8,)`` adds
attention at every level whose feature map is 8 pixels high, so the parameter tree depends on
the image size used at ``init``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from latentjax.models.bottleneck import (
    FSQ,
    Deterministic,
    DiagonalGaussian,
    VectorQuantizer,
    moment_channels,
)
from latentjax.models.layers import conv, group_norm


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, twice, plus a 1x1 conv shortcut when the width changes."""

    out_channels: int
    num_groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, Cin] -> [B, H, W, Cout]
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
        # One head of width C over the HW positions: [B, HW, 1, C] is the (batch, seq, heads,
        # head dim) layout jax.nn.dot_product_attention expects; its default scale is 1/sqrt(C).
        q, k, v = (conv(c, 1, name=n)(h).reshape(b, hgt * wid, 1, c) for n in ("q", "k", "v"))
        out = jax.nn.dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v: [B, HW, 1, C]
        return x + conv(c, 1, name="proj_out")(out.reshape(b, hgt, wid, c))


class Downsample(nn.Module):
    """Halves H and W with a stride-2 3x3 conv."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, H/2, W/2, C]
        # Padding only at the bottom/right, as the reference (F.pad(x, (0, 1, 0, 1)) then an
        # unpadded conv), so converted weights see the same pixels.
        return conv(x.shape[-1], 3, stride=2, padding=((0, 1), (0, 1)), name="conv")(x)


class Upsample(nn.Module):
    """Doubles H and W: nearest-neighbour repeat, then a 3x3 conv."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, 2H, 2W, C]
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return conv(x.shape[-1], 3, name="conv")(x)


class MidBlock(nn.Module):
    """The middle of both networks at the lowest resolution: ResNet, attention, ResNet (without
    ``attention``: the two ResNets alone, as diffusers' ``mid_block_add_attention=False``)."""

    num_groups: int = 32
    attention: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, h, w, C]
        c = x.shape[-1]
        x = ResnetBlock(c, self.num_groups, name="block_1")(x)
        if self.attention:
            x = AttnBlock(self.num_groups, name="attn_1")(x)
        return ResnetBlock(c, self.num_groups, name="block_2")(x)


class Level(nn.Module):
    """One resolution level: ``num_blocks`` ResNet blocks (each followed by attention when
    ``attention``), then an optional resampling (``"down"``/``"up"``). Its network names it
    ``down_{i}`` / ``up_{i}``, mirroring the reference's ``down[i]`` / ``up[i]``."""

    out_channels: int
    num_blocks: int
    attention: bool = False
    resample: str | None = None  # None | "down" | "up"
    num_groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, Cin]
        for j in range(self.num_blocks):
            x = ResnetBlock(self.out_channels, self.num_groups, name=f"block_{j}")(x)
            if self.attention:
                x = AttnBlock(self.num_groups, name=f"attn_{j}")(x)
        if self.resample == "down":
            x = Downsample(name="downsample")(x)
        elif self.resample == "up":
            x = Upsample(name="upsample")(x)
        elif self.resample is not None:
            raise ValueError(f"resample must be None, 'down' or 'up', got {self.resample!r}")
        return x


class Encoder(nn.Module):
    """Image -> moments of q(z|x) (2 * z_channels when ``double_z``) at 1/f resolution,
    f = 2 ** (len(ch_mult) - 1)."""

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    z_channels: int
    double_z: bool = True
    attn_resolutions: Sequence[int] = ()
    num_groups: int = 32
    mid_attention: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, H/f, W/f, (2)z]
        h = conv(self.ch, 3, name="conv_in")(x)  # [B, H, W, ch]
        last = len(self.ch_mult) - 1
        for i, mult in enumerate(self.ch_mult):
            h = Level(
                self.ch * mult,
                self.num_res_blocks,
                attention=h.shape[1] in self.attn_resolutions,
                resample="down" if i != last else None,
                num_groups=self.num_groups,
                name=f"down_{i}",
            )(h)
        h = MidBlock(self.num_groups, self.mid_attention, name="mid")(
            h
        )  # [B, H/f, W/f, ch * ch_mult[-1]]
        h = nn.silu(group_norm(h.shape[-1], self.num_groups, name="norm_out")(h))
        out = 2 * self.z_channels if self.double_z else self.z_channels
        return conv(out, 3, name="conv_out")(h)


class Decoder(nn.Module):
    """Latent -> image, mirroring the encoder with one more ResNet block per level."""

    ch: int
    ch_mult: Sequence[int]
    out_channels: int
    num_res_blocks: int
    attn_resolutions: Sequence[int] = ()
    num_groups: int = 32
    mid_attention: bool = True

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:  # [B, h, w, z] -> [B, h*f, w*f, out]
        h = conv(self.ch * self.ch_mult[-1], 3, name="conv_in")(z)
        h = MidBlock(self.num_groups, self.mid_attention, name="mid")(h)
        for i in reversed(range(len(self.ch_mult))):
            h = Level(
                self.ch * self.ch_mult[i],
                self.num_res_blocks + 1,
                attention=h.shape[1] in self.attn_resolutions,
                resample="up" if i != 0 else None,
                num_groups=self.num_groups,
                name=f"up_{i}",
            )(h)
        h = nn.silu(group_norm(h.shape[-1], self.num_groups, name="norm_out")(h))
        # The adaptive GAN weight (Esser et al. 2021, eq. 7) differentiates through this layer:
        # keep its name.
        return conv(self.out_channels, 3, name="conv_out")(h)


class AutoencoderKL(nn.Module):
    """Encoder -> bottleneck -> decoder (Rombach et al. 2022). The default bottleneck is their
    "KL-reg" diagonal Gaussian; ``bottleneck`` picks another around the same networks (see
    ``latentjax/models/bottleneck.py``): "ae" (no regulariser), "vq" (a learnt codebook of
    ``codebook_size`` vectors, taming's VQGAN layout: the codebook is ``quantize/embedding``) or
    "fsq" (``fsq_levels`` per latent channel, no parameters).

    ``embed_dim`` adds Stable Diffusion's 1x1 ``quant_conv``/``post_quant_conv`` and makes the
    latent ``embed_dim`` channels wide; without it the latent has ``z_channels``. Use
    ``model.apply(params, x, method=model.encode)`` / ``method=model.decode`` for either half.
    ``decode`` snaps a VQ/FSQ latent to its codebook first (as latent-diffusion's
    ``VQModelInterface.decode``), so a stage-2 model's continuous output decodes to codes.
    """

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    z_channels: int
    in_channels: int
    attn_resolutions: Sequence[int] = ()
    num_groups: int = 32
    embed_dim: int | None = None
    bottleneck: str = "kl"  # "kl" | "ae" | "vq" | "fsq"
    codebook_size: int = 512  # vq only
    vq_estimator: str = "ste"  # vq only: "ste" | "rotation"
    fsq_levels: Sequence[int] = ()  # fsq only: one level count per latent channel
    mid_attention: bool = True  # attention in the middle blocks (False: diffusers'
    # mid_block_add_attention=False)

    def setup(self):
        kl = self.bottleneck == "kl"
        self.encoder = Encoder(
            ch=self.ch,
            ch_mult=tuple(self.ch_mult),
            num_res_blocks=self.num_res_blocks,
            z_channels=self.z_channels,
            double_z=kl,
            attn_resolutions=tuple(self.attn_resolutions),
            num_groups=self.num_groups,
            mid_attention=self.mid_attention,
        )
        self.decoder = Decoder(
            ch=self.ch,
            ch_mult=tuple(self.ch_mult),
            out_channels=self.in_channels,
            num_res_blocks=self.num_res_blocks,
            attn_resolutions=tuple(self.attn_resolutions),
            num_groups=self.num_groups,
            mid_attention=self.mid_attention,
        )
        if self.embed_dim is not None:
            self.quant_conv = conv(moment_channels(self.bottleneck, self.embed_dim), 1)
            self.post_quant_conv = conv(self.z_channels, 1)
        if self.bottleneck == "vq":
            self.quantize = VectorQuantizer(
                self.codebook_size, self.latent_channels, estimator=self.vq_estimator
            )
        elif self.bottleneck == "fsq":
            if len(self.fsq_levels) != self.latent_channels:
                raise ValueError(
                    f"fsq_levels {tuple(self.fsq_levels)} has {len(self.fsq_levels)} entries but "
                    f"the latent has {self.latent_channels} channels"
                )
            self.quantize = FSQ(tuple(self.fsq_levels))
        else:
            moment_channels(self.bottleneck, 1)  # raises on an unknown name

    @property
    def downsample_factor(self) -> int:
        """f: how many pixels of a side one latent position covers."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_channels(self) -> int:
        return self.z_channels if self.embed_dim is None else self.embed_dim

    def encode(self, x: jax.Array) -> DiagonalGaussian | Deterministic:  # x: [B, H, W, C]
        """x in [-1, 1] -> the posterior (see the bottleneck module for its interface)."""
        moments = self.encoder(x)  # [B, H/f, W/f, (2) z_channels]
        if self.embed_dim is not None:
            moments = self.quant_conv(moments)  # [B, H/f, W/f, (2) embed_dim]
        if self.bottleneck == "kl":
            return DiagonalGaussian.from_moments(moments)
        if self.bottleneck == "ae":
            no_code = jnp.full(moments.shape[:-1], -1, jnp.int32)
            return Deterministic(mean=moments, indices=no_code, losses={})
        return self.quantize(moments)

    def decode(self, z: jax.Array) -> jax.Array:  # [B, h, w, latent_channels] -> [B, H, W, C]
        if self.bottleneck in ("vq", "fsq"):
            z = self.quantize.snap(z)
        return self._decode(z)

    def _decode(self, z: jax.Array) -> jax.Array:
        if self.embed_dim is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def __call__(
        self, x: jax.Array, sample: bool = True
    ) -> tuple[jax.Array, DiagonalGaussian | Deterministic]:
        """Reconstruct ``x`` through a posterior sample (KL: needs the "sample" rng) or, with
        ``sample=False``, through the posterior mode. -> (x_hat [B, H, W, C], posterior)."""
        posterior = self.encode(x)
        if sample and self.bottleneck == "kl":
            z = posterior.sample(self.make_rng("sample"))
        else:
            z = posterior.mode()  # VQ/FSQ: already quantised, with the encoder's gradient
        return self._decode(z), posterior
