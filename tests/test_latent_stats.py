"""The latent normalisation ``(z - shift) * scale`` measured on known latents, against numpy over
all of them: through the latent cache's moments and through the frozen encoder's."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from latentjax.data.latents import cached_moments, latent_stats
from latentjax.models.bottleneck import Deterministic, DiagonalGaussian
from latentjax.parallel import mesh as mesh_lib
from latentjax.train.dit import measure_latent_stats

MU = np.array([0.5, -2.0, 3.0])
SIGMA = np.array([1.0, 0.25, 2.0])


def known_latents(num_batches=3, batch=8):
    """[num_batches, batch, 2, 2, 3]: channel c ~ N(MU_c, SIGMA_c^2)."""
    rng = np.random.default_rng(0)
    return MU + SIGMA * rng.standard_normal((num_batches, batch, 2, 2, 3))


def expected(z):
    """What ``latent_stats`` reports, from all latents at once in float64 (batches of one size,
    so the mean of batch means is the mean)."""
    flat = z.reshape(-1, z.shape[-1])
    per_batch_var = z.reshape(z.shape[0], -1, z.shape[-1]).var(axis=1)  # [batches, C]
    return {
        "shift": flat.mean(),
        "std": flat.std(),
        "scale": 1.0 / flat.std(),
        "channel_mean": flat.mean(axis=0),
        "channel_std": flat.std(axis=0),
        "channel_var_of_posterior_mean": per_batch_var.mean(axis=0),
        "num_batches": z.shape[0],
    }


def check(got, z, rtol):
    for k, want in expected(z).items():
        np.testing.assert_allclose(got[k], want, rtol=rtol, err_msg=k)
    normalised = (z - got["shift"]) * got["scale"]
    np.testing.assert_allclose([normalised.mean(), normalised.std()], [0.0, 1.0], atol=1e-5)


def test_stats_of_cached_latents_against_numpy():
    z = known_latents()
    batches = [{"mean": b.astype(np.float32), "std": np.zeros_like(b, np.float32)} for b in z]
    check(latent_stats(cached_moments(batches)), z.astype(np.float32).astype(np.float64), 1e-5)


def test_stats_of_cached_posteriors_sample_them():
    """With a posterior std s, the latents are samples mean + s eps: their variance is the
    means' plus s^2 (Monte Carlo over 64k elements), the posterior means' spread unchanged."""
    z = known_latents(num_batches=4, batch=4096)
    s = 0.5
    batches = [{"mean": b.astype(np.float32), "std": np.full(b.shape, s, np.float32)} for b in z]
    got = latent_stats(cached_moments(batches))
    flat = z.reshape(-1, 3)
    np.testing.assert_allclose(got["shift"], flat.mean(), atol=0.01)
    np.testing.assert_allclose(got["std"], np.sqrt(flat.var() + s**2), rtol=0.01)
    np.testing.assert_allclose(got["channel_std"], np.sqrt(flat.var(0) + s**2), rtol=0.01)
    np.testing.assert_allclose(got["channel_var_of_posterior_mean"], flat.var(0), rtol=0.01)


class GaussianEncoder:
    """A frozen "encoder" whose posterior is N(image, std^2): the image itself for std 0."""

    def __init__(self, std: float):
        self.std = std

    def encode(self):
        raise NotImplementedError  # only passed as ``method``

    def apply(self, params, images, method):
        assert method == self.encode
        if self.std == 0:
            indices = jnp.zeros(images.shape[:-1], jnp.int32)
            return Deterministic(mean=images, indices=indices, losses={})
        logvar = jnp.full_like(images, 2 * np.log(self.std))
        return DiagonalGaussian(mean=images, logvar=logvar)


def test_stats_measured_through_the_encoder_against_numpy():
    z = known_latents()
    mesh = mesh_lib.make_mesh({"data": -1})
    batches = [{"image": b.astype(np.float32)} for b in z]
    got = measure_latent_stats(GaussianEncoder(0.0), {}, batches, mesh)
    check(got, z.astype(np.float32).astype(np.float64), 1e-5)


def test_measured_stats_are_of_posterior_samples():
    """As training sees them: samples of the posterior, whose variance adds to the means'."""
    z = known_latents(num_batches=4, batch=4096)
    s = 0.5
    mesh = mesh_lib.make_mesh({"data": -1})
    batches = [{"image": b.astype(np.float32)} for b in z]
    got = measure_latent_stats(GaussianEncoder(s), {}, batches, mesh)
    flat = z.reshape(-1, 3)
    np.testing.assert_allclose(got["shift"], flat.mean(), atol=0.01)
    np.testing.assert_allclose(got["std"], np.sqrt(flat.var() + s**2), rtol=0.01)
    np.testing.assert_allclose(got["channel_std"], np.sqrt(flat.var(0) + s**2), rtol=0.01)
    np.testing.assert_allclose(got["channel_var_of_posterior_mean"], flat.var(0), rtol=0.01)
