"""Perceptual reconstruction terms that need no downloaded weights, and the LPIPS hook.

Every function returns a per-example loss [B] on the same scale as
``reconstruction_loss`` (a sum over pixel elements), so the weights in a config mean "this many
L1s":

- ``haar``: L1 between the multi-level Haar wavelet coefficients of the two images. The
  orthonormal Haar transform preserves energy, so its L2 would equal the pixel L2; its L1 weighs
  every scale's edges separately, which penalises the blur an L1/L2 decoder prefers.
- ``fft``: L1 between the amplitude spectra (orthonormal 2-D FFT per channel), the "focal
  frequency" idea (Jiang et al. 2021) without its adaptive weights: blur removes high-frequency
  amplitude and is charged for it; it is blind to translation.
- ``lpips``: the LPIPS distance (Zhang et al. 2018, eq. 1) of a feature network the caller
  supplies (its VGG16 weights come from the weight-import code); as latent-diffusion adds LPIPS
  to every pixel's error before summing, it is multiplied by the number of pixel elements here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

PERCEPTUAL_LOSSES = ("none", "haar", "fft", "lpips")

FeatureFn = Callable[[jax.Array], Sequence[jax.Array]]


def haar_level(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One level of the orthonormal 2-D Haar transform. [B, H, W, C] with H, W even ->
    (approximation [B, H/2, W/2, C], details [B, H/2, W/2, 3C])."""
    a, b = x[:, 0::2, 0::2], x[:, 0::2, 1::2]
    c, d = x[:, 1::2, 0::2], x[:, 1::2, 1::2]
    ll = (a + b + c + d) / 2.0
    lh = (a - b + c - d) / 2.0  # horizontal change
    hl = (a + b - c - d) / 2.0  # vertical change
    hh = (a - b - c + d) / 2.0  # diagonal
    return ll, jnp.concatenate([lh, hl, hh], axis=-1)


def haar_coefficients(x: jax.Array, levels: int) -> list[jax.Array]:
    """Details of each level, finest first, then the last approximation. Stops early where a
    side is odd."""
    out = []
    for _ in range(levels):
        if x.shape[1] % 2 or x.shape[2] % 2:
            break
        x, details = haar_level(x)
        out.append(details)
    return [*out, x]


def _sum_per_example(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1).sum(axis=1)


def haar_loss(x: jax.Array, x_hat: jax.Array, levels: int = 3) -> jax.Array:
    """Sum over levels of the L1 between Haar coefficients. -> [B]"""
    pairs = zip(haar_coefficients(x, levels), haar_coefficients(x_hat, levels), strict=True)
    return sum(_sum_per_example(jnp.abs(a - b)) for a, b in pairs)


def fft_amplitude_loss(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    """L1 between the orthonormal 2-D amplitude spectra of each channel. -> [B]"""
    amp = lambda im: jnp.abs(jnp.fft.fft2(im, axes=(1, 2), norm="ortho"))  # noqa: E731
    return _sum_per_example(jnp.abs(amp(x) - amp(x_hat)))


def lpips_distance(
    features: FeatureFn,
    x: jax.Array,
    x_hat: jax.Array,
    heads: Sequence[jax.Array] | None = None,
    eps: float = 1e-10,
) -> jax.Array:
    """LPIPS (Zhang et al. 2018, eq. 1): for each feature layer l, unit-normalise the features
    along channels, square the difference, weight channels by the learnt head w_l (ones
    without heads), sum channels, average positions; sum over layers. -> [B]

    ``features``: images [B, H, W, C] -> list of [B, h_l, w_l, c_l] activations (the caller
    applies the network's own input normalisation)."""
    fx, fy = features(x), features(x_hat)
    if heads is None:
        heads = [None] * len(fx)
    total = jnp.zeros(x.shape[:1], x.dtype)
    for a, b, w in zip(fx, fy, heads, strict=True):
        na = a / (jnp.linalg.norm(a, axis=-1, keepdims=True) + eps)
        nb = b / (jnp.linalg.norm(b, axis=-1, keepdims=True) + eps)
        d = jnp.square(na - nb)
        if w is not None:
            d = d * w
        total = total + jnp.mean(jnp.sum(d, axis=-1), axis=(1, 2))
    return total


DistanceFn = Callable[[jax.Array, jax.Array], jax.Array]


def perceptual_loss(
    kind: str,
    x: jax.Array,
    x_hat: jax.Array,
    features: FeatureFn | None = None,
    distance: DistanceFn | None = None,
) -> jax.Array:
    """The configured perceptual term, per example on the pixel-sum scale. -> [B]

    For "lpips", ``distance`` is a whole LPIPS network (``latentjax.models.lpips.LPIPS``:
    VGG16 with its learnt heads; grey images are repeated to RGB first), else ``features``
    gives the activations and the heads are ones."""
    if kind == "haar":
        return haar_loss(x, x_hat)
    if kind == "fft":
        return fft_amplitude_loss(x, x_hat)
    if kind == "lpips" and distance is not None:
        rgb = lambda im: jnp.repeat(im, 3, axis=-1) if im.shape[-1] == 1 else im  # noqa: E731
        return distance(rgb(x), rgb(x_hat)) * x[0].size
    if kind == "lpips":
        if features is None:
            raise ValueError("the lpips loss needs a feature network; none was given")
        return lpips_distance(features, x, x_hat) * x[0].size
    raise ValueError(f"unknown perceptual loss {kind!r}; use one of {PERCEPTUAL_LOSSES}")
