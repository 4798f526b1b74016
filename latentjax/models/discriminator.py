"""PatchGAN discriminator (pix2pix, Isola et al. 2017; as used by taming/latent-diffusion).

It scores overlapping patches rather than the whole image: the output is a map of logits. Batch
norm (the reference's default) is replaced by GroupNorm or nothing, because batch statistics
would couple the examples of a sharded batch and add mutable state to a functional step.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from latentjax.models.layers import conv, group_norm


class PatchDiscriminator(nn.Module):
    """``n_layers`` stride-2 4x4 convs (width ndf, 2ndf, ... capped at 8ndf), one stride-1 conv,
    then a 1-channel stride-1 conv. With padding 1 each stride-2 layer halves the size and each
    stride-1 layer shrinks it by 1: a 32x32 input with n_layers=2 gives 6x6 logits."""

    ndf: int = 64
    n_layers: int = 3
    norm: str = "group"  # "group" | "none"
    num_groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, h', w', 1]
        if self.norm not in ("group", "none"):
            raise ValueError(f"unknown discriminator norm {self.norm!r}; use 'group' or 'none'")
        init = nn.initializers.normal(0.02)  # DCGAN/pix2pix initialisation
        pad = ((1, 1), (1, 1))
        h = conv(self.ndf, 4, stride=2, padding=pad, kernel_init=init, name="conv_0")(x)
        h = nn.leaky_relu(h, 0.2)
        for i in range(1, self.n_layers + 1):
            width = self.ndf * min(2**i, 8)
            stride = 2 if i < self.n_layers else 1
            h = conv(width, 4, stride=stride, padding=pad, kernel_init=init, name=f"conv_{i}")(h)
            if self.norm == "group":
                h = group_norm(width, self.num_groups, name=f"norm_{i}")(h)
            h = nn.leaky_relu(h, 0.2)
        return conv(1, 4, padding=pad, kernel_init=init, name="conv_out")(h)
