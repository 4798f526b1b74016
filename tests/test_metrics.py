"""PSNR against its closed form; SSIM against scikit-image; MS-SSIM against a float64 numpy
reference built from scipy's Gaussian filter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from latentjax.eval.metrics import gaussian_window, ms_ssim, psnr, rfid, ssim


def _pair(seed, shape=(3, 24, 20, 3)):
    rng = np.random.default_rng(seed)
    # Smooth random images and a noisy, dimmed, shifted copy: SSIM well inside (0, 1).
    x = np.clip(3 * gaussian_filter(rng.normal(size=shape), (0, 2, 2, 0)), -1, 1)
    y = np.clip(0.8 * x + 0.25 * rng.normal(size=shape) + 0.1, -1, 1)
    return x.astype(np.float32), y.astype(np.float32)


def test_psnr_closed_form():
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    offsets = np.array([0.1, 0.5], np.float32)
    y = x + offsets[:, None, None, None]  # MSE = offset^2 exactly
    want = 10 * np.log10(4.0 / offsets.astype(np.float64) ** 2)
    np.testing.assert_allclose(psnr(jnp.asarray(x), jnp.asarray(y)), want, rtol=1e-5)
    # data_range 1 and 255: the same ratio, so the same dB for scaled images.
    np.testing.assert_allclose(psnr(x * 127.5, y * 127.5, data_range=255.0), want, rtol=1e-5)


def test_gaussian_window_matches_scipy():
    impulse = np.zeros(11)
    impulse[5] = 1.0
    np.testing.assert_allclose(gaussian_window(), gaussian_filter(impulse, 1.5, truncate=3.5))


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_scikit_image(channels):
    x, y = _pair(channels, (3, 24, 20, channels))
    got = np.asarray(ssim(jnp.asarray(x), jnp.asarray(y), data_range=2.0))
    want = [
        structural_similarity(
            a,
            b,
            data_range=2.0,
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )  # fmt: skip
        for a, b in zip(x.astype(np.float64), y.astype(np.float64), strict=True)
    ]
    assert 0.05 < min(want) < max(want) < 0.95
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(ssim(jnp.asarray(x), jnp.asarray(x)), 1.0, atol=1e-5)


def test_ssim_is_differentiable_and_gradient_is_right():
    x, y = _pair(5, (1, 16, 16, 1))
    f = jax.jit(lambda y: jnp.sum(ssim(jnp.asarray(x, jnp.float32), y)))
    g = np.asarray(jax.grad(f)(jnp.asarray(y)))
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    # Central difference on a few pixels (float32: a loose but meaningful tolerance).
    for idx in [(0, 7, 7, 0), (0, 3, 12, 0), (0, 0, 0, 0)]:
        e = np.zeros_like(y)
        e[idx] = 1e-2
        fd = (f(jnp.asarray(y + e)) - f(jnp.asarray(y - e))) / 2e-2
        np.testing.assert_allclose(g[idx], fd, rtol=0.05, atol=1e-4)


def _np_ssim_cs(x, y, data_range=2.0):
    """Float64 reference: scipy Gaussian filter (reflect), crop 5 px, as scikit-image does."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    f = lambda a: gaussian_filter(a, 1.5, truncate=3.5)[5:-5, 5:-5]
    out_s, out_cs = [], []
    for ch in range(x.shape[-1]):
        a, b = x[..., ch], y[..., ch]
        ma, mb = f(a), f(b)
        va, vb, vab = f(a * a) - ma**2, f(b * b) - mb**2, f(a * b) - ma * mb
        cs = (2 * vab + c2) / (va + vb + c2)
        out_s.append(((2 * ma * mb + c1) / (ma**2 + mb**2 + c1) * cs).mean())
        out_cs.append(cs.mean())
    return np.mean(out_s), np.mean(out_cs)


def _np_pool(im):
    h, w = im.shape[0] // 2 * 2, im.shape[1] // 2 * 2
    return im[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).mean(axis=(1, 3))


def test_ms_ssim_matches_numpy_reference():
    x, y = _pair(7, (2, 48, 44, 3))
    weights = (0.3, 0.3, 0.4)
    got = np.asarray(ms_ssim(jnp.asarray(x), jnp.asarray(y), weights=weights))
    want = []
    for a, b in zip(x.astype(np.float64), y.astype(np.float64), strict=True):
        value = 1.0
        for j, w in enumerate(weights):
            s, cs = _np_ssim_cs(a, b)
            value *= max(s if j == len(weights) - 1 else cs, 0.0) ** w
            a, b = _np_pool(a), _np_pool(b)
        want.append(value)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # One scale is plain SSIM.
    np.testing.assert_allclose(
        ms_ssim(jnp.asarray(x), jnp.asarray(y), weights=(1.0,)), ssim(x, y), rtol=1e-6
    )


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="smaller than"):
        ssim(jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match="one shape"):
        ssim(jnp.zeros((1, 16, 16, 1)), jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="fewer weights"):
        ms_ssim(jnp.zeros((1, 64, 64, 1)), jnp.zeros((1, 64, 64, 1)))


def test_rfid_closed_form():
    # Identity features of two Gaussians with diagonal covariances whose sample statistics are
    # exact by construction: FD = |mu_a - mu_b|^2 + sum_i (s_a + s_b - 2 sqrt(s_a s_b)).
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 3))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample cov I
    sa, sb = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    ma, mb = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
    want = np.sum((ma - mb) ** 2) + np.sum(sa + sb - 2 * np.sqrt(sa * sb))
    images = (ma + z * np.sqrt(sa)).reshape(500, 1, 1, 3)
    recons = (mb + z[::-1] * np.sqrt(sb)).reshape(500, 1, 1, 3)
    calls = []
    feature_fn = lambda b: calls.append(len(b)) or b.reshape(len(b), -1)
    np.testing.assert_allclose(rfid(images, recons, feature_fn, batch_size=128), want, rtol=1e-9)
    assert calls == [128, 128, 128, 116] * 2
