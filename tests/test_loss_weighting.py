"""Loss weightings, prediction targets and DDPM schedules against closed forms in float64 and
against diffusers' ``DDPMScheduler``.

A weighting is a weight lambda(t) on the squared error of x0 (``latentjax/losses/diffusion.py``).
For a prediction out = p x0 + q eps at fixed x_t = alpha x0 + sigma eps, an error d in x0 is an
error J d in the output with J = p - q alpha / sigma, so the weight on the output's squared
error is lambda / J^2. By prediction (SNR = alpha^2 / sigma^2):

- eps (p, q = 0, 1): J^2 = SNR;
- x0 (1, 0): J^2 = 1;
- v (-sigma, alpha): J^2 = (alpha^2 + sigma^2)^2 / sigma^2;
- velocity (alpha', sigma'): J^2 = (alpha' sigma - sigma' alpha)^2 / sigma^2.

and lambda is min(SNR, gamma), SNR, SNR + 1 or max(SNR, 1); "none" weighs the output's error by
1 whatever the prediction. The paths' alpha, sigma and derivatives are written out below from
their definitions (the discrete ones from diffusers' betas), not taken from ``paths.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffusers import DDPMScheduler

from latentjax.diffusion.paths import (
    DISCRETE_PATHS,
    PATHS,
    PREDICTIONS,
    Path,
    discrete_log_alpha_bar,
)
from latentjax.losses.diffusion import WEIGHTINGS, diffusion_loss, output_weight

GAMMA = 3.0
# Off the discrete grid (t N not an integer: alpha_bar is interpolated between grid points).
T = np.array([0.0123, 0.1007, 0.2531, 0.5005, 0.7777, 0.9501])

SCHEDULERS = {
    "ddpm_linear": dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
    "ddpm_scaled_linear": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    "ddpm_cosine": dict(beta_schedule="squaredcos_cap_v2"),
}


def scheduler(name: str) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, **SCHEDULERS[name])


def reference_path(name: str, t: np.ndarray):
    """(alpha, sigma, alpha', sigma') at t, float64."""
    t = np.asarray(t, np.float64)
    if name == "linear":  # rectified flow
        return 1 - t, t, -np.ones_like(t), np.ones_like(t)
    if name == "cosine":
        h = np.pi / 2
        return np.cos(h * t), np.sin(h * t), -h * np.sin(h * t), h * np.cos(h * t)
    # log alpha_bar after n noising steps, linear in t = n / N between grid points.
    betas = scheduler(name).betas.double().numpy()
    log_ab = np.concatenate([[0.0], np.cumsum(np.log1p(-betas))])
    n = len(betas)
    i = np.floor(t * n).astype(int)
    slope = n * (log_ab[i + 1] - log_ab[i])  # d log alpha_bar / dt
    ab = np.exp(log_ab[i] + (t * n - i) * (log_ab[i + 1] - log_ab[i]))
    alpha, sigma = np.sqrt(ab), np.sqrt(1 - ab)
    return alpha, sigma, 0.5 * slope * alpha, -0.5 * slope * ab / sigma


def reference_weight(path: str, prediction: str, weighting: str, t: np.ndarray) -> np.ndarray:
    alpha, sigma, d_alpha, d_sigma = reference_path(path, t)
    snr = alpha**2 / sigma**2
    if weighting == "none":
        return np.ones_like(t)
    jac2 = {
        "eps": snr,
        "x0": np.ones_like(t),
        "v": (alpha**2 + sigma**2) ** 2 / sigma**2,
        "velocity": (d_alpha * sigma - d_sigma * alpha) ** 2 / sigma**2,
    }[prediction]
    lam = {
        "min_snr": np.minimum(snr, GAMMA),
        "snr": snr,
        "snr_plus_one": snr + 1,
        "truncated_snr": np.maximum(snr, 1.0),
    }[weighting]
    return lam / jac2


def reference_target(path, prediction, x0, eps, t):
    alpha, sigma, d_alpha, d_sigma = (a[:, None, None, None] for a in reference_path(path, t))
    return {
        "eps": eps,
        "x0": x0,
        "v": alpha * eps - sigma * x0,
        "velocity": d_alpha * x0 + d_sigma * eps,
    }[prediction]


@pytest.mark.parametrize("path", PATHS)
def test_output_weights_against_closed_forms(path):
    p = Path(path)
    for prediction in PREDICTIONS:
        for weighting in WEIGHTINGS:
            got = output_weight(p, prediction, weighting, jnp.asarray(T, jnp.float32), GAMMA)
            want = reference_weight(path, prediction, weighting, T)
            np.testing.assert_allclose(got, want, rtol=2e-4, err_msg=f"{prediction} {weighting}")
    # The two weightings that name a prediction's own loss are 1 on that prediction:
    # "snr" on eps (Ho et al. 2020), "snr_plus_one" on v on variance-preserving paths.
    if path != "linear":
        np.testing.assert_allclose(reference_weight(path, "eps", "snr", T), 1.0, rtol=1e-12)
        np.testing.assert_allclose(reference_weight(path, "v", "snr_plus_one", T), 1, rtol=1e-9)


@pytest.mark.parametrize("path", PATHS)
def test_diffusion_loss_applies_target_and_weight(path):
    """The loss the objective returns is mean(weight * (output - target)^2), with the output's
    extra (learned-variance) channels ignored; x_t and t are recorded from the network's call,
    eps recovered from them in float64."""
    x0 = np.asarray(jax.random.normal(jax.random.key(0), (8, 2, 2, 3)), np.float64)
    labels = jnp.arange(8, dtype=jnp.int32)
    for prediction in PREDICTIONS:
        for weighting in WEIGHTINGS:
            seen = []

            def network(params, x_t, t1000, y, seen=seen):
                seen.append((np.asarray(x_t, np.float64), np.asarray(t1000, np.float64)))
                np.testing.assert_array_equal(y, labels)
                out = params * x_t + 0.1  # some output, not the target
                return jnp.concatenate([out, jnp.full_like(out, 1e3)], axis=-1)  # + variance

            loss, aux = diffusion_loss(
                network,
                jnp.float32(0.7),
                jnp.asarray(x0, jnp.float32),
                labels,
                jax.random.key(1),
                path=path,
                prediction=prediction,
                weighting=weighting,
                min_snr_gamma=GAMMA,
            )
            ((x_t, t1000),) = seen
            t = t1000 / 1000.0
            np.testing.assert_allclose(aux["t"], t, rtol=1e-6)
            # Away from t = 0, where eps = (x_t - alpha x0) / sigma loses float32's precision.
            assert t.min() > 0.02 and t.max() < 1.0
            alpha, sigma, _, _ = (a[:, None, None, None] for a in reference_path(path, t))
            eps = (x_t - alpha * np.asarray(x0, np.float32)) / sigma
            target = reference_target(path, prediction, np.asarray(x0, np.float32), eps, t)
            weight = reference_weight(path, prediction, weighting, t)[:, None, None, None]
            want = np.mean(weight * (0.7 * x_t + 0.1 - target) ** 2)
            np.testing.assert_allclose(
                float(loss), want, rtol=5e-4, err_msg=f"{prediction} {weighting}"
            )


@pytest.mark.parametrize("name", DISCRETE_PATHS)
def test_ddpm_schedules_match_diffusers(name):
    """alpha_bar after n noising steps is diffusers' alphas_cumprod[n - 1], and the path puts it
    at t = n / N: alpha(n / N)^2 = alpha_bar_n, sigma^2 = 1 - alpha_bar_n."""
    want = scheduler(name).alphas_cumprod.double().numpy()  # float32 products
    table = np.exp(discrete_log_alpha_bar(name))
    assert table[0] == 1.0 and len(table) == 1001
    np.testing.assert_allclose(table[1:], want, rtol=2e-5, atol=1e-9)
    n = np.array([1, 10, 250, 500, 999, 1000])
    p = Path(name)
    t = jnp.asarray(n / 1000.0, jnp.float32)
    np.testing.assert_allclose(np.asarray(p.alpha(t)) ** 2, want[n - 1], rtol=1e-4, atol=1e-8)
    # (diffusers' 1 - alpha_bar carries float32's rounding of alpha_bar near 1: atol.)
    np.testing.assert_allclose(np.asarray(p.sigma(t)) ** 2, 1 - want[n - 1], rtol=1e-4, atol=1e-7)
