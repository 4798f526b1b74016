"""PatchGAN discriminator (pix2pix, Isola et al. 2017; as used by taming/latent-diffusion).

It scores overlapping patches rather than the whole image: the output is a map of logits. Batch
norm (the reference's default) is replaced by GroupNorm or nothing, because batch statistics
would couple the examples of a sharded batch and add mutable state to a functional step.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from latentjax.models.layers import conv, group_norm

NORMS = ("group", "none")


class PatchDiscriminator(nn.Module):
    """``n_layers`` stride-2 4x4 convs (width ndf, 2ndf, ... capped at 8ndf), one stride-1 conv,
    then a 1-channel stride-1 conv; LeakyReLU(0.2) after all but the last, a norm after all but
    the first and last.

    Output size: every conv pads 1, so each stride-2 layer maps a side s to floor(s / 2) and each
    stride-1 4x4 layer to s - 1: side H gives H / 2**n_layers - 2. A 32x32 input gives 6x6 logits
    with n_layers=2 and 2x2 with n_layers=3 (the reference's 256x256 gives 30x30).
    """

    ndf: int = 64
    n_layers: int = 3
    norm: str = "group"  # "group" | "none"
    num_groups: int = 32  # capped at the width of each layer

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, h', w', 1]
        if self.norm not in NORMS:
            raise ValueError(f"unknown discriminator norm {self.norm!r}; use one of {NORMS}")
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
        init = nn.initializers.normal(0.02)  # DCGAN/pix2pix initialisation
        pad = ((1, 1), (1, 1))
        h = conv(self.ndf, 4, stride=2, padding=pad, kernel_init=init, name="conv_0")(x)
        h = nn.leaky_relu(h, 0.2)
        normed = self.norm == "group"
        for i in range(1, self.n_layers + 1):
            width = self.ndf * min(2**i, 8)
            stride = 2 if i < self.n_layers else 1
            # A bias before a norm's own shift is redundant (the reference drops it too).
            h = conv(
                width,
                4,
                stride=stride,
                padding=pad,
                kernel_init=init,
                use_bias=not normed,
                name=f"conv_{i}",
            )(h)
            if normed:
                h = group_norm(width, self.num_groups, name=f"norm_{i}")(h)
            h = nn.leaky_relu(h, 0.2)
        return conv(1, 4, padding=pad, kernel_init=init, name="conv_out")(h)
