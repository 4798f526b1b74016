"""The latent report on a linear encoder of Gaussian data, where every number has a closed form.

Data x in R^D at each of 2 x 2 positions is whitened exactly (sample mean 0, population
covariance I), and the "encoder" is mu = A x + b with a fixed log-variance per channel. Then the
latent mean is b, its covariance is A A^T (exactly, not up to sampling error), the KL per
channel is 0.5 (b^2 + diag(A A^T) + exp(l) - 1 - l), a unit is active iff its row of A has
squared norm > 0.01, and the principal components are the eigenvectors of A A^T.
"""

import numpy as np
import pytest

from latentjax.eval import latent_report as lr

N, D, C = 4000, 6, 4


def _whitened(rng, n, d):
    x = rng.normal(size=(n, d))
    x -= x.mean(axis=0)
    # Cholesky whitening: the population covariance becomes I exactly.
    cov = x.T @ x / n
    return x @ np.linalg.inv(np.linalg.cholesky(cov)).T


@pytest.fixture(scope="module")
def linear_case():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(C, C)))  # eigenvectors of A A^T
    r, _ = np.linalg.qr(rng.normal(size=(D, D)))
    s = np.array([2.0, 1.0, 0.5, 0.05])  # singular values; 0.05^2 < 0.01: one dead direction
    a = q @ np.diag(s) @ r[:C]  # [C, D], A A^T = Q diag(s^2) Q^T
    b = np.array([0.5, -1.0, 0.0, 2.0])
    logvar = np.array([-1.0, 0.0, -3.0, 0.5])
    x = np.stack([_whitened(rng, N, D) for _ in range(4)], axis=1).reshape(N, 2, 2, D)
    mu = x @ a.T + b  # [N, 2, 2, C]
    return {"a": a, "b": b, "q": q, "s": s, "logvar": logvar, "mu": mu}


def test_channel_stats_and_scale(linear_case):
    a, b, mu = linear_case["a"], linear_case["b"], linear_case["mu"]
    var = np.diag(a @ a.T)
    stats = lr.channel_stats(mu)
    np.testing.assert_allclose(stats["mean"], b, atol=1e-12)
    np.testing.assert_allclose(stats["std"], np.sqrt(var), rtol=1e-10)
    # All elements pooled: a mixture of the channels' distributions.
    pooled_var = np.mean(var + b**2) - np.mean(b) ** 2
    sf = lr.scale_factor(mu)
    np.testing.assert_allclose(sf["shift"], b.mean(), atol=1e-12)
    np.testing.assert_allclose(sf["scale"], 1 / np.sqrt(pooled_var), rtol=1e-10)
    np.testing.assert_allclose(((mu - sf["shift"]) * sf["scale"]).var(), 1.0, rtol=1e-10)


def test_kl_per_channel(linear_case):
    a, b, lv, mu = (linear_case[k] for k in ("a", "b", "logvar", "mu"))
    logvar = np.broadcast_to(lv, mu.shape)
    want = 0.5 * (b**2 + np.diag(a @ a.T) + np.exp(lv) - 1 - lv)
    np.testing.assert_allclose(lr.gaussian_kl_per_channel(mu, logvar), want, rtol=1e-10)
    # The posterior equal to the prior has zero KL.
    np.testing.assert_allclose(lr.gaussian_kl_per_channel(np.zeros((2, 1, 1, 3)),
                                                          np.zeros((2, 1, 1, 3))), 0.0)  # fmt: skip


def test_active_units(linear_case):
    # Rows of A with a squared norm of ~0.0025 are dead: build such an encoder directly.
    rng = np.random.default_rng(1)
    a = rng.normal(size=(C, D))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    a *= np.sqrt([1.0, 0.02, 0.005, 0.0])[:, None]  # A_u = squared row norms
    x = np.stack([_whitened(rng, N, D) for _ in range(4)], axis=1).reshape(N, 2, 2, D)
    units = lr.active_units(x @ a.T + 3.0)
    want = np.broadcast_to([1.0, 0.02, 0.005, 0.0], (2, 2, C))
    np.testing.assert_allclose(units["variance"], want, atol=1e-12)
    assert units["count"] == 8 and units["total"] == 16
    np.testing.assert_array_equal(units["per_channel"], [4, 4, 0, 0])
    assert lr.active_units(x @ a.T, threshold=0.001)["count"] == 12


def test_principal_components(linear_case):
    q, s, b, mu = (linear_case[k] for k in ("q", "s", "b", "mu"))
    pca = lr.principal_components(mu, k=3)
    np.testing.assert_allclose(pca["explained_variance"], s[:3] ** 2, rtol=1e-9)
    np.testing.assert_allclose(pca["ratio"], s[:3] ** 2 / np.sum(s**2), rtol=1e-9)
    np.testing.assert_allclose(pca["mean"], b, atol=1e-12)
    for k in range(3):  # eigenvectors up to sign
        np.testing.assert_allclose(np.abs(pca["components"][k] @ q[:, k]), 1.0, rtol=1e-9)
    # A latent at mean + 1 std along component 1 is (0.7, 0.5, 0.5) in the picture.
    z = (b + s[0] * pca["components"][0]).reshape(1, 1, 1, C)
    np.testing.assert_allclose(lr.pca_rgb(z, pca)[0, 0, 0], [0.7, 0.5, 0.5], atol=1e-9)
    rgb = lr.pca_rgb(mu)
    assert rgb.shape == (N, 2, 2, 3) and rgb.min() >= 0 and rgb.max() <= 1
    # Fewer than 3 channels: the missing components are zero (grey).
    two = lr.principal_components(mu[..., :2], k=3)
    assert two["components"].shape == (3, 2) and two["explained_variance"][2] == 0


def test_size_reduction():
    assert lr.size_reduction((16, 16, 1), (4, 4, 4)) == 4.0
    assert lr.size_reduction((256, 256, 3), (32, 32, 4)) == 48.0


def test_interpolation():
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0])
    lin = lr.interpolate(a, b, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(lin, [a, (a + b) / 2, b])
    u, v = np.array([[3.0, 0.0]]), np.array([[0.0, 3.0]])  # orthogonal, equal norms
    sl = lr.interpolate(u, v, [0.0, 1 / 3, 0.5, 1.0], kind="slerp")
    np.testing.assert_allclose(sl[0], u, atol=1e-12)
    np.testing.assert_allclose(sl[-1], v, atol=1e-12)
    # On the circle of radius 3, at angles 30 and 45 degrees.
    np.testing.assert_allclose(sl[1], [[3 * np.cos(np.pi / 6), 3 * np.sin(np.pi / 6)]])
    np.testing.assert_allclose(sl[2], [[3 / np.sqrt(2), 3 / np.sqrt(2)]])
    # Parallel endpoints fall back to the straight line.
    np.testing.assert_allclose(lr.interpolate(u, 2 * u, [0.5], kind="slerp")[0], 1.5 * u)
    with pytest.raises(ValueError, match="linear"):
        lr.interpolate(a, b, [0.5], kind="cubic")
