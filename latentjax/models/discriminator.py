"""PatchGAN discriminator (pix2pix, Isola et al. 2017; as used by taming/latent-diffusion).

It scores overlapping patches rather than the whole image: the output is a map of logits.
With ``temporal_kernel`` > 0 it is the same network in 3-D over clips [B, T, H, W, C] (as the
3-D PatchGANs video autoencoders train with, e.g. Open-Sora-Plan's ``NLayerDiscriminator3D``):
every kernel spans ``temporal_kernel`` frames, so a patch's realism includes its motion. Time
keeps its length (stride 1, the kernel's frames padded half before, half after): a 4-frame
stride-2 kernel in time, as the 3-D references use, would leave nothing of a 9-frame clip after
two layers.

Norms: "group" (the default here), "none", or "batch" -- the reference's BatchNorm. The
discriminator is only ever run in training, where BatchNorm normalises by the statistics of the
batch it is given; its running averages would only serve an evaluation mode that is never used.
So "batch" is implemented as exactly that training-mode normalisation with a learnt scale and
shift and *no* running statistics: no mutable collection, nothing extra in the jitted step's
state. Under jit on a sharded batch the mean/variance are global reductions (the compiler
inserts the all-reduce), i.e. synchronised BatchNorm. Like the reference, real and fake images
are scored in separate calls, so each is normalised by its own statistics. It couples the
examples of a batch, so an R1 penalty taken through it is not per-example.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from latentjax.models import layers
from latentjax.models.layers import group_norm
from latentjax.parallel.axes import NORM

NORMS = ("group", "batch", "none")


class BatchStatNorm(nn.Module):
    """Training-mode BatchNorm (Ioffe & Szegedy 2015, Alg. 1): normalise each channel by the
    mean and biased variance over batch and positions, then scale and shift. No running
    averages (see the module docstring)."""

    eps: float = 1e-5  # torch BatchNorm2d's default

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] or [B, T, H, W, C]
        c = x.shape[-1]
        named = lambda init: nn.with_logical_partitioning(init, (NORM,))  # noqa: E731
        scale = self.param("scale", named(nn.initializers.ones), (c,))
        bias = self.param("bias", named(nn.initializers.zeros), (c,))
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean), axis=axes)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


class PatchDiscriminator(nn.Module):
    """``n_layers`` stride-2 4x4 convs (width ndf, 2ndf, ... capped at 8ndf), one stride-1 conv,
    then a 1-channel stride-1 conv; LeakyReLU(0.2) after all but the last, a norm after all but
    the first and last.

    Output size: every conv pads 1, so each stride-2 layer maps a side s to floor(s / 2) and each
    stride-1 4x4 layer to s - 1: side H gives H / 2**n_layers - 2. A 32x32 input gives 6x6 logits
    with n_layers=2 and 2x2 with n_layers=3 (the reference's 256x256 gives 30x30). In 3-D
    (``temporal_kernel`` k > 0, odd) the sides shrink alike and T frames give T.
    """

    ndf: int = 64
    n_layers: int = 3
    norm: str = "group"  # "group" | "batch" | "none"
    num_groups: int = 32  # capped at the width of each layer
    temporal_kernel: int = 0  # 0: images (or frames); odd k > 0: 3-D over clips, k frames

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, H, W, C] -> [B, h', w', 1]; in 3-D [B, T, H, W, C] -> [B, T, h', w', 1]."""
        if self.norm not in NORMS:
            raise ValueError(f"unknown discriminator norm {self.norm!r}; use one of {NORMS}")
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
        k = self.temporal_kernel
        if k < 0 or (k and k % 2 == 0):
            raise ValueError(f"temporal_kernel must be 0 or odd, got {k}")
        if x.ndim != (5 if k else 4):
            raise ValueError(
                f"a {'3' if k else '2'}-D PatchGAN takes {'clips' if k else 'images'}, got "
                f"shape {x.shape}"
            )
        init = nn.initializers.normal(0.02)  # DCGAN/pix2pix initialisation
        pad = ((k // 2, k // 2),) * bool(k) + ((1, 1), (1, 1))
        conv = functools.partial(layers.conv, padding=pad, kernel_init=init, frames=k)
        h = conv(self.ndf, 4, stride=2, name="conv_0")(x)
        h = nn.leaky_relu(h, 0.2)
        normed = self.norm != "none"
        for i in range(1, self.n_layers + 1):
            width = self.ndf * min(2**i, 8)
            stride = 2 if i < self.n_layers else 1
            # A bias before a norm's own shift is redundant (the reference drops it too).
            h = conv(width, 4, stride=stride, use_bias=not normed, name=f"conv_{i}")(h)
            if self.norm == "group":
                h = group_norm(width, self.num_groups, name=f"norm_{i}")(h)
            elif self.norm == "batch":
                h = BatchStatNorm(name=f"norm_{i}")(h)
            h = nn.leaky_relu(h, 0.2)
        return conv(1, 4, name="conv_out")(h)
