"""The modelability proxies (``latentjax/eval/modelability.py``), each on a case whose answer is
known in closed form: white noise, a latent that is a down-sampled image, a linearly separable
toy, points on a circle interpolated straight or along the circle."""

from __future__ import annotations

import numpy as np
import pytest

from latentjax.eval import distribution
from latentjax.eval import modelability as m


def test_white_noise_has_a_flat_spectrum_and_the_share_of_high_frequencies_of_the_plane():
    x = np.random.default_rng(0).standard_normal((400, 32, 32, 3))
    s = m.radial_spectrum(x)
    assert s["power"].shape == (3, 16) and s["frequency"].shape == (16,)
    # Flat: every ring's mean power is the noise's variance (1), up to sampling error.
    np.testing.assert_allclose(s["power"], 1.0, rtol=0.08)
    # Equal power at every frequency: the high-frequency share is the share of the grid's
    # frequencies in the band (about 0.75: the annulus of a disc), the centroid their mean radius.
    r = np.hypot(*np.meshgrid(np.fft.fftfreq(32), np.fft.fftfreq(32), indexing="ij"))
    r = r[(r > 0) & (r <= 0.5)]
    np.testing.assert_allclose(s["high"], np.mean(r > 0.25), atol=0.01)
    np.testing.assert_allclose(s["centroid"], r.mean(), rtol=0.01)
    assert abs(np.mean(r > 0.25) - 0.75) < 0.03 and abs(r.mean() - 1 / 3) < 0.01
    np.testing.assert_allclose(m.normalised(s).sum(), 1.0)
    # A smooth field (each image a constant plus one slow wave) has its energy low.
    t = np.arange(32) / 32
    slow = np.sin(2 * np.pi * (t[:, None] + 2 * t[None, :]))[None, :, :, None]  # (1, 2) cycles
    low = m.radial_spectrum(slow + x[..., :1] * 1e-3)
    assert low["high"][0] < 1e-4
    np.testing.assert_allclose(low["centroid"][0], np.sqrt(5) / 32, rtol=1e-3)  # its radius


def _fft_downsample(x: np.ndarray, factor: int) -> np.ndarray:
    """``x`` [N, H, H, C] with every frequency at or above the small grid's Nyquist removed,
    sampled on the grid ``factor`` times coarser: the ideal down-sampler."""
    size = x.shape[1] // factor
    spectrum = np.fft.fft2(x, axes=(1, 2))
    k = np.fft.fftfreq(x.shape[1], 1.0 / x.shape[1]).astype(int)  # integer frequencies
    keep = np.abs(k) < size // 2
    small = np.zeros((len(x), size, size, x.shape[-1]), complex)
    rows = k[keep] % size
    small[:, rows[:, None], rows[None, :]] = spectrum[:, keep][:, :, keep]
    out = np.fft.ifft2(small, axes=(1, 2))
    assert np.abs(out.imag).max() < 1e-9  # the kept frequencies are conjugate-symmetric
    return out.real


def test_a_latent_that_is_a_down_sampled_image_has_the_images_spectrum():
    rng = np.random.default_rng(1)
    # Images with a falling spectrum (1 / f noise), so the match is not that of two flat lines.
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij"))
    colour = 1.0 / np.maximum(k, 1.0 / 64)
    noise = np.fft.fft2(rng.standard_normal((64, 64, 64, 2)), axes=(1, 2))
    images = np.fft.ifft2(noise * colour[None, :, :, None], axes=(1, 2)).real
    factor = 4
    latents = _fft_downsample(images, factor)  # [64, 16, 16, 2]
    z, x = m.radial_spectrum(latents), m.radial_spectrum(images, num_bins=factor * 8)
    # The latent's ring b (cycles per latent sample) is the image's ring b at factor x the
    # resolution: the same frequencies, so the same power up to one constant. (Not the last
    # ring: the latent's stops at its Nyquist radius, the image's ring goes on past it.)
    shared = x["power"][:, :7]
    ratio = z["power"][:, :7] / shared
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-9)
    np.testing.assert_array_equal(z["count"][:7], x["count"][:7])
    np.testing.assert_allclose(z["frequency"] / factor, x["frequency"][:8])
    assert shared[0, 0] > 10 * shared[0, -1]  # the spectrum does fall


def test_the_linear_probe_reads_a_linearly_separable_toy_perfectly_and_noise_at_chance():
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((4, 6)) * 10
    labels = rng.integers(0, 4, 400)
    points = centres[labels] + rng.standard_normal((400, 6))  # 10-sigma apart: separable
    latents = points.reshape(400, 1, 2, 3)
    assert m.linear_probe(latents[:300], labels[:300], latents[300:], labels[300:]) == 1.0
    noise = rng.standard_normal((400, 1, 2, 3))
    chance = m.linear_probe(noise[:300], labels[:300], noise[300:], labels[300:])
    assert chance < 0.45  # 4 classes: 0.25 expected


def _circle(angles) -> np.ndarray:
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


@pytest.mark.parametrize("pairs", [8, 12])
def test_straight_interpolation_between_points_on_a_circle_cuts_inside_it(pairs):
    """2 x ``pairs`` points on the unit circle, in close pairs (angles i * gap -+ eps). Each
    point's nearest neighbour is its partner; the straight midpoints lie on a circle of radius
    cos((gap - 2 eps) / 2), evenly spaced, so their Fréchet distance to the points on the unit
    circle is 2 c (1 - r)^2 with c the covariance scale of ``pairs`` evenly spaced points (the
    N - 1 normalisation). A latent that is the angle, decoded onto the circle, interpolates
    along it: distance 0."""
    n = 2 * pairs
    gap, eps = 2 * np.pi / n, 0.2 * (2 * np.pi / n)
    angles = np.arange(n) * gap + np.where(np.arange(n) % 2 == 0, eps, -eps)
    points = _circle(angles)
    found = m.nearest_pairs(points)
    np.testing.assert_array_equal(found[:, 1], np.arange(n) ^ 1)  # 0 <-> 1, 2 <-> 3, ...
    unique = found[found[:, 0] < found[:, 1]]
    reference = points[::2]  # ``pairs`` evenly spaced points on the unit circle
    straight = m.midpoints(points, unique)  # the identity decoder
    r = np.cos((gap - 2 * eps) / 2)
    np.testing.assert_allclose(np.linalg.norm(straight, axis=1), r)
    c = (pairs / 2) / (pairs - 1)
    expected = 2 * c * (1 - r) ** 2
    np.testing.assert_allclose(
        distribution.frechet_distance(reference, straight), expected, rtol=1e-6
    )
    along = _circle(m.midpoints(angles[:, None], unique)[:, 0])  # the angle latent, decoded
    assert distribution.frechet_distance(reference, along) < 1e-10


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        m.nearest_pairs(np.zeros((1, 4)))
    with pytest.raises(AssertionError):
        m.radial_spectrum(np.zeros((2, 8, 8)))  # not NHWC


def test_a_two_by_two_grid_holds_only_nyquist_and_a_constant_channel_has_no_figure():
    x = np.random.default_rng(3).standard_normal((50, 2, 2, 2))
    x[..., 1] = 0.7  # constant: no energy at any frequency
    s = m.radial_spectrum(x)
    # (0.5, 0) and (0, 0.5) are the grid's only frequencies in the disc: all of it is "high".
    assert s["high"][0] == 1.0 and s["centroid"][0] == 0.5
    assert np.isnan(s["high"][1]) and np.isnan(s["centroid"][1])
