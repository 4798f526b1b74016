"""Cheap proxies of a latent space's modelability, as pure numpy functions.

Which space will a generator like? The honest answer is to train one on it (``latentjax probe``,
``latentjax/eval/probe.py``); these are the proxies the field has proposed for skipping that,
each computed on arrays the caller has encoded (``latentjax eval`` on a stage-1 run does it),
so each can be checked on a case with a known answer:

* **Power spectrum** (Skorokhodov et al. 2025, "Improving the Diffusability of Autoencoders":
  latents of autoencoders with many channels carry more high-frequency energy than the images,
  and diffusion, which generates coarse to fine, models them worse). :func:`radial_spectrum`
  averages the 2D FFT's power over rings of equal frequency, per channel; frequency is in cycles
  per sample of each grid (0.5 = Nyquist), so a latent grid and its image share an axis only
  when the latent's is divided by the downsampling factor. Its ``high`` figure is the share of
  the energy above half the Nyquist frequency (0.75 for white noise on a large grid), its
  ``centroid`` the energy-weighted mean frequency.
* **Interpolation** (an iFID-style score): the latents of held-out images are each paired with
  their nearest neighbour (:func:`nearest_pairs`), the pair's midpoint is decoded
  (:func:`midpoints`), and the decoded images are judged by their distance to the data, beside
  the same distance of the reconstructions. A decoder that is smooth between encodings keeps
  the midpoints on the data manifold; one that folds space does not.
* **Linear probe** (the "usable information" view): the class accuracy of a logistic regression
  on the flattened latents (:func:`linear_probe`).

Shapes: latents and images ``[N, h, w, C]`` (NHWC); statistics in float64.
"""

from __future__ import annotations

import chex
import numpy as np

HIGH_FREQUENCY = 0.25  # cycles per sample: half the Nyquist frequency


def _nhwc(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    chex.assert_rank(x, 4)
    return x


def radial_spectrum(x, num_bins: int | None = None) -> dict[str, np.ndarray]:
    """The radially averaged power spectrum of ``x`` [N, H, W, C], per channel.

    Each image's channel has its mean removed (the DC term says nothing about frequency
    content), is transformed by a 2D FFT, and its power ``|X(f)|^2 / (H W)`` is averaged over the
    images. Frequencies ``f = (fy, fx)`` in cycles per sample are grouped by radius ``|f|`` into
    ``num_bins`` rings (default ``min(H, W) // 2``, one per integer radius of the smaller side):
    ring b holds ``(b + 1/2) d <= |f| < (b + 3/2) d`` with ``d = 0.5 / num_bins``, the last one
    ending at the Nyquist radius 0.5 (included), so the DC term and the corners beyond Nyquist
    are left out. ->

    - ``frequency`` [B]: each ring's centre radius, ``(b + 1) d``;
    - ``power`` [C, B]: mean power of the frequencies in a ring (a density: flat for white noise);
    - ``energy`` [C, B]: their summed power;
    - ``count`` [B]: frequencies per ring;
    - ``high`` [C]: the share of the energy strictly above half the Nyquist frequency
      (:data:`HIGH_FREQUENCY`), counted per frequency, not per ring (on a 4 x 4 grid the rings
      are as wide as the band; on a 2 x 2 grid every frequency is the Nyquist one, so the share
      is 1 whatever the latent: a small grid's figure says little);
    - ``centroid`` [C]: the energy-weighted mean radius, in cycles per sample (white noise on a
      large grid: 1/3, the mean radius of a disc of radius 1/2);
    NaN where a channel has no energy (a constant).
    """
    x = _nhwc(x)
    _, height, width, _ = x.shape
    bins = num_bins or max(1, min(height, width) // 2)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    power = np.square(np.abs(np.fft.fft2(x, axes=(1, 2)))).mean(axis=0) / (height * width)
    fy, fx = np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij")
    radius = np.hypot(fy, fx)
    step = 0.5 / bins
    ring = np.floor(radius / step - 0.5).astype(int)  # [H, W]
    keep = (ring >= 0) & (radius <= 0.5)
    count = np.bincount(ring[keep], minlength=bins)
    energy = np.stack(
        [np.bincount(ring[keep], power[..., c][keep], minlength=bins) for c in range(x.shape[-1])]
    )
    inside = (radius > 0) & (radius <= 0.5)
    total = power[inside].sum(axis=0)  # [C]
    some = np.where(total > 0, total, np.nan)
    return {
        "frequency": (np.arange(bins) + 1.0) * step,
        "power": energy / np.maximum(count, 1),
        "energy": energy,
        "count": count,
        "high": power[inside & (radius > HIGH_FREQUENCY)].sum(axis=0) / some,
        "centroid": (power[inside] * radius[inside][:, None]).sum(axis=0) / some,
    }


def normalised(spectrum: dict[str, np.ndarray]) -> np.ndarray:
    """The channel-averaged ``power`` scaled to sum to 1 over the rings: spectra of spaces of
    different scale and channel count on one plot. -> [B]."""
    power = np.asarray(spectrum["power"], np.float64).mean(axis=0)
    total = power.sum()
    return power / total if total > 0 else power


def nearest_pairs(latents) -> np.ndarray:
    """Each latent with its nearest other latent (Euclidean, flattened). ``latents`` [N, ...]
    with N >= 2 -> int [N, 2] rows ``(i, j)``."""
    z = np.asarray(latents, np.float64).reshape(len(latents), -1)
    if len(z) < 2:
        raise ValueError(f"nearest_pairs needs at least 2 latents, got {len(z)}")
    sq = np.square(z).sum(axis=1)
    distances = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    np.fill_diagonal(distances, np.inf)
    return np.stack([np.arange(len(z)), np.argmin(distances, axis=1)], axis=1)


def midpoints(latents, pairs, t: float = 0.5) -> np.ndarray:
    """Points at fraction ``t`` on the straight line of each pair: ``(1 - t) z_i + t z_j``.
    ``latents`` [N, ...], ``pairs`` int [P, 2] -> [P, ...] in the latents' dtype."""
    z = np.asarray(latents)
    pairs = np.asarray(pairs)
    chex.assert_shape(pairs, (None, 2))
    return ((1.0 - t) * z[pairs[:, 0]] + t * z[pairs[:, 1]]).astype(z.dtype)


def linear_probe(train_x, train_y, test_x, test_y, max_iter: int = 2000) -> float:
    """Test accuracy of a logistic regression fitted on ``train_x`` [N, ...] (flattened and
    standardised with the training set's mean and std) to ``train_y`` [N]. One BLAS thread:
    the problems here are small, and spinning threads would fight the caller's."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    a = np.asarray(train_x, np.float64).reshape(len(train_x), -1)
    b = np.asarray(test_x, np.float64).reshape(len(test_x), -1)
    chex.assert_equal_shape_suffix([a, b], 1)
    scaler = StandardScaler().fit(a)
    with threadpool_limits(limits=1, user_api="blas"):
        model = LogisticRegression(max_iter=max_iter).fit(scaler.transform(a), train_y)
    return float(model.score(scaler.transform(b), test_y))
