"""Image-quality metrics in jnp: PSNR, SSIM and MS-SSIM, per image, differentiable.

Images are NHWC. The defaults assume latentjax's range [-1, 1] (``data_range=2``). SSIM is
differentiable (plain convolutions and arithmetic), so ``1 - ssim`` can serve as a loss.

SSIM follows Wang et al. (2004), "Image quality assessment: from error visibility to structural
similarity", eq. 13 with the Gaussian window of section III-C (11 x 11, sigma 1.5, normalised),
K1 = 0.01, K2 = 0.03, population (biased) local variances, and the mean of the SSIM map over the
positions where the window fits the image ("valid"); colour images average the channels. These
are the settings of scikit-image's ``structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=...)``, which the tests compare against.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# Wang et al. 2003 ("Multi-scale structural similarity", table in section 3.2): the exponents of
# the five scales, finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def psnr(x: jax.Array, y: jax.Array, data_range: float = 2.0) -> jax.Array:
    """Peak signal-to-noise ratio in dB per image: 10 log10(range^2 / MSE). [B, ...] -> [B]

    Identical images give a large finite number (the MSE is floored at 1e-10 range^2, 100 dB).
    """
    mse = jnp.mean(jnp.square(x - y), axis=tuple(range(1, x.ndim)))
    return 10.0 * jnp.log10(data_range**2 / jnp.maximum(mse, 1e-10 * data_range**2))


@functools.cache
def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalised 1-D Gaussian of ``size`` taps (Wang et al. 2004, section III-C)."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-0.5 * np.square(r / sigma))
    return w / w.sum()


def _filter(x: jax.Array, window: np.ndarray) -> jax.Array:
    """Separable 'valid' Gaussian filter of each channel. [B, H, W, C] -> [B, H-k+1, W-k+1, C]"""
    c = x.shape[-1]
    k = jnp.asarray(window, x.dtype)
    # Depthwise convolutions (feature_group_count = C), one along H and one along W.
    for kernel in (k.reshape(-1, 1, 1, 1), k.reshape(1, -1, 1, 1)):
        x = jax.lax.conv_general_dilated(
            x,
            jnp.tile(kernel, (1, 1, 1, c)),
            window_strides=(1, 1),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=c,
        )
    return x


def _ssim_terms(x, y, data_range, win_size, sigma, k1, k2):
    """Per-image means over the valid positions and channels of the full SSIM map and of the
    contrast-structure map cs = (2 s_xy + C2) / (s_x^2 + s_y^2 + C2). -> ([B], [B])"""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two NHWC images of one shape, got {x.shape} and {y.shape}")
    if min(x.shape[1:3]) < win_size:
        raise ValueError(f"ssim: images {x.shape[1:3]} are smaller than the {win_size}px window")
    window = gaussian_window(win_size, sigma)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mx, my = _filter(x, window), _filter(y, window)
    # Local (population) variances and covariance: E[x^2] - E[x]^2 under the window.
    vx = _filter(x * x, window) - mx * mx
    vy = _filter(y * y, window) - my * my
    vxy = _filter(x * y, window) - mx * my
    cs = (2.0 * vxy + c2) / (vx + vy + c2)
    luminance = (2.0 * mx * my + c1) / (mx * mx + my * my + c1)
    axes = (1, 2, 3)
    return jnp.mean(luminance * cs, axis=axes), jnp.mean(cs, axis=axes)


def ssim(
    x: jax.Array,
    y: jax.Array,
    data_range: float = 2.0,
    *,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jax.Array:
    """Mean structural similarity per image (Wang et al. 2004, eq. 13). [B, H, W, C] x2 -> [B]

    1 for identical images; H and W must be at least ``win_size``.
    """
    return _ssim_terms(x, y, data_range, win_size, sigma, k1, k2)[0]


def ms_ssim(
    x: jax.Array,
    y: jax.Array,
    data_range: float = 2.0,
    *,
    weights=MS_SSIM_WEIGHTS,
    win_size: int = 11,
    sigma: float = 1.5,
) -> jax.Array:
    """Multi-scale SSIM (Wang et al. 2003, eq. 7) per image. [B, H, W, C] x2 -> [B]

    prod_{j < M} cs_j^{w_j} * ssim_M^{w_M} over M = len(weights) scales, each the previous one
    halved by 2 x 2 average pooling. Fewer ``weights`` suit small images (the coarsest scale
    must still hold the window: side >= win_size * 2^(M-1)); they are renormalised to sum to 1.
    The cs and SSIM terms are clipped at 0 first so a negative value cannot meet a fractional
    power (a NaN).
    """
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    need = win_size * 2 ** (len(w) - 1)
    if min(x.shape[1:3]) < need:
        raise ValueError(
            f"ms_ssim with {len(w)} scales needs sides >= {need}px, got {x.shape[1:3]}; pass "
            "fewer weights"
        )
    out = jnp.ones(x.shape[:1], x.dtype)
    for j, wj in enumerate(w):
        s, cs = _ssim_terms(x, y, data_range, win_size, sigma, 0.01, 0.03)
        last = j == len(w) - 1
        out = out * jnp.maximum(s if last else cs, 0.0) ** wj
        if not last:
            x, y = _avg_pool2(x), _avg_pool2(y)
    return out


def _avg_pool2(x: jax.Array) -> jax.Array:
    """2 x 2 average pooling, dropping an odd last row/column. [B, H, W, C] -> [B, H/2, W/2, C]"""
    b, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def rfid(images, reconstructions, feature_fn, batch_size: int = 64) -> float:
    """Reconstruction FID: the Fréchet distance (Heusel et al. 2017, eq. 6; computed by
    ``latentjax.eval.fid``) between Gaussians fitted to ``feature_fn`` features ([B, D]) of
    ``images`` and of ``reconstructions`` (both [N, H, W, C] in [-1, 1]), fed in batches. With
    the FID Inception net (``latentjax.eval.fid.load_inception``) this is the usual rFID."""
    from latentjax.eval import fid

    def features(x):
        parts = [
            np.asarray(feature_fn(x[i : i + batch_size])) for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(parts).reshape(len(x), -1)

    return fid.frechet_distance(*fid.statistics(features(images)),
                                *fid.statistics(features(reconstructions)))  # fmt: skip
