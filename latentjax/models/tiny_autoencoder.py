"""TAESD, the tiny distilled autoencoder (Ollin Boer Bohan, github.com/madebyollin/taesd), NHWC,
as diffusers' ``AutoencoderTiny`` (``EncoderTiny``/``DecoderTiny`` in
``models/autoencoders/vae.py``) computes it, for converted weights.

Plain convolutions and residual blocks of three 3x3 convs, no normalisation and no attention;
the encoder halves the side with a stride-2 conv at every stage after the first, the decoder
first soft-clamps the latent to (-3, 3) with 3 tanh(z / 3) and doubles the side with nearest
upsampling. The encoder reads images in [0, 1] and the decoder writes [0, 1] (TAESD's
convention); here both take and give [-1, 1] like every latentjax autoencoder, as diffusers'
wrapper does. The latent is deterministic and already on the diffusion model's scale (TAESD
approximates Stable Diffusion's *scaled* latents: diffusers' ``scaling_factor`` is 1).

Parameter tree: ``encoder/layers_{k}`` and ``decoder/layers_{k}`` with ``k`` the index into
diffusers' ``nn.Sequential`` (activations and upsamplings take an index but no parameters), so
the converter maps ``encoder.layers.{k}`` one to one. A residual block holds ``conv_0, conv_2,
conv_4`` (its own ``conv`` sequence's indices) and ``skip`` when the width changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from latentjax.models.bottleneck import Deterministic
from latentjax.models.layers import activation, conv

# PyTorch pads a stride-2 3x3 conv by one pixel on every side; "SAME" would pad only the
# bottom/right and shift the sampling grid.
_PAD1 = ((1, 1), (1, 1))


class TinyBlock(nn.Module):
    """Three 3x3 convs with ``act`` between them, plus the input (1x1 conv if the width
    changes), then ReLU."""

    out_channels: int
    act: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.act)
        h = act(conv(self.out_channels, 3, name="conv_0")(x))
        h = act(conv(self.out_channels, 3, name="conv_2")(h))
        h = conv(self.out_channels, 3, name="conv_4")(h)
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1, use_bias=False, name="skip")(x)
        return nn.relu(h + x)


class TinyEncoder(nn.Module):
    latent_channels: int
    channels: Sequence[int]
    blocks: Sequence[int]
    act: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] in [-1, 1]
        h = (x + 1.0) / 2.0  # TAESD reads [0, 1]
        k = 0
        for i, (width, n) in enumerate(zip(self.channels, self.blocks, strict=True)):
            if i == 0:
                h = conv(width, 3, name=f"layers_{k}")(h)
            else:
                h = conv(width, 3, stride=2, padding=_PAD1, use_bias=False, name=f"layers_{k}")(h)
            k += 1
            for _ in range(n):
                h = TinyBlock(width, self.act, name=f"layers_{k}")(h)
                k += 1
        return conv(self.latent_channels, 3, name=f"layers_{k}")(h)


class TinyDecoder(nn.Module):
    out_channels: int
    channels: Sequence[int]
    blocks: Sequence[int]
    act: str = "relu"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:  # [B, h, w, latent] -> [-1, 1] images
        h = jnp.tanh(z / 3.0) * 3.0  # soft clamp to (-3, 3)
        h = activation(self.act)(conv(self.channels[0], 3, name="layers_0")(h))
        k = 2  # the activation took index 1
        last = len(self.channels) - 1
        for i, (width, n) in enumerate(zip(self.channels, self.blocks, strict=True)):
            for _ in range(n):
                h = TinyBlock(width, self.act, name=f"layers_{k}")(h)
                k += 1
            if i != last:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest, x2
                k += 1
            out = self.out_channels if i == last else width
            h = conv(out, 3, use_bias=i == last, name=f"layers_{k}")(h)
            k += 1
        return h * 2.0 - 1.0  # TAESD writes [0, 1]


class TinyAutoencoder(nn.Module):
    """TAESD: image [B, H, W, C] in [-1, 1] <-> deterministic latent [B, H/f, W/f,
    latent_channels], f = 2 ** (stages - 1). ``AutoencoderKL``'s interface: ``encode`` returns a
    ``Deterministic`` posterior, ``decode`` an image, ``__call__`` both."""

    in_channels: int
    latent_channels: int
    encoder_channels: Sequence[int]
    decoder_channels: Sequence[int]
    encoder_blocks: Sequence[int]
    decoder_blocks: Sequence[int]
    act: str = "relu"

    def setup(self):
        self.encoder = TinyEncoder(
            self.latent_channels, tuple(self.encoder_channels), tuple(self.encoder_blocks), self.act
        )
        self.decoder = TinyDecoder(
            self.in_channels, tuple(self.decoder_channels), tuple(self.decoder_blocks), self.act
        )

    @property
    def bottleneck(self) -> str:
        return "ae"  # a deterministic latent

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.encoder_channels) - 1)

    def encode(self, x: jax.Array) -> Deterministic:
        z = self.encoder(x)
        return Deterministic(mean=z, indices=jnp.full(z.shape[:-1], -1, jnp.int32), losses={})

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)

    def __call__(self, x: jax.Array, sample: bool = True) -> tuple[jax.Array, Deterministic]:
        del sample  # deterministic: no posterior sample to draw
        posterior = self.encode(x)
        return self.decode(posterior.mode()), posterior
