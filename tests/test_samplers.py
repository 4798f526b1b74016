"""Every sampler against closed forms for Gaussian data with the exact denoiser.

For x0 ~ N(mu, s^2 I) the exact model and the exact probability-flow ODE solution are in
tests/test_diffusion.py (``exact_apply_fn``, ``ode_solution``). Deterministic samplers must
converge to that solution at their order (fitted slope of log error against log steps); the
stochastic ones (DDPM, DDIM with eta, Euler–Maruyama) must reproduce the data distribution's
moments within Monte Carlo error. The step count is a runtime argument: one compiled program
serves every count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_diffusion import exact_apply_fn, ode_solution

from latentjax.diffusion.samplers import (
    SAMPLERS,
    SamplerError,
    check_sampler,
    default_t_max,
    guided_output,
    make_runtime_sampler,
)

MU, STD = np.array([1.0, -2.0], np.float32), 0.4
FULL = jnp.array([0.0, 1.0])


def _keys(n: int, seed: int = 0) -> jax.Array:
    return jax.random.split(jax.random.key(seed), n)


@pytest.mark.parametrize(
    ("sampler", "path", "prediction", "order", "steps"),
    [
        ("ddim", "cosine", "eps", 1, (10, 20, 40, 80)),
        ("euler", "cosine", "v", 1, (10, 20, 40, 80)),
        ("heun", "linear", "velocity", 2, (10, 20, 40, 80)),
        ("heun", "cosine", "eps", 2, (10, 20, 40, 80)),
        # Uniform-t grids give DPM-Solver++ O(1) steps in lambda = log(alpha / sigma) near both
        # ends, so second order shows only asymptotically (slope -1.75 at these N, -2 beyond).
        ("dpmpp_2m", "linear", "velocity", 1.75, (80, 160, 320, 640)),
    ],
)
def test_deterministic_samplers_converge_at_their_order(sampler, path, prediction, order, steps):
    fn = exact_apply_fn(path, prediction, MU[None], STD)
    noise = jax.random.normal(jax.random.key(3), (8, 2))
    labels = jnp.zeros(8, jnp.int32)
    exact = ode_solution(path, np.asarray(noise), default_t_max(prediction), MU, STD)
    run = make_runtime_sampler(fn, path=path, prediction=prediction, sampler=sampler)
    errors = [
        float(np.abs(np.asarray(run(None, noise, labels, None, n, 0.0, 1.0, FULL)) - exact).max())
        for n in steps
    ]
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope + order) < 0.3, (errors, slope)
    assert errors[-1] < 0.02, errors
    # Changing the number of steps did not recompile: one program for all of them.
    assert run._cache_size() == 1


def test_ddpm_equals_ddim_eta_one_and_eta_zero_is_deterministic():
    # Two formulas (posterior mean/variance vs DDIM's eq. 12 with c = sigma_ddim) of one sampler.
    fn = exact_apply_fn("ddpm_linear", "eps", MU[None], STD)
    noise = jax.random.normal(jax.random.key(4), (16, 2))
    labels, keys = jnp.zeros(16, jnp.int32), _keys(16)
    ddpm = make_runtime_sampler(fn, path="ddpm_linear", prediction="eps", sampler="ddpm")
    ddim = make_runtime_sampler(fn, path="ddpm_linear", prediction="eps", sampler="ddim")
    a = ddpm(None, noise, labels, keys, 20, 0.0, 1.0, FULL)
    b = ddim(None, noise, labels, keys, 20, 1.0, 1.0, FULL)
    np.testing.assert_allclose(a, b, atol=2e-4)
    c = ddim(None, noise, labels, keys, 20, 0.0, 1.0, FULL)
    d = ddim(None, noise, labels, _keys(16, 1), 20, 0.0, 1.0, FULL)
    np.testing.assert_array_equal(c, d)  # eta = 0 ignores the keys
    assert float(jnp.abs(a - c).max()) > 0.05  # eta = 1 does not
    assert ddim._cache_size() == 1  # eta is a runtime argument too


@pytest.mark.parametrize(
    ("sampler", "path", "prediction", "eta"),
    [
        ("ddpm", "ddpm_linear", "eps", 0.0),
        ("ddim", "cosine", "v", 0.5),
        ("euler_maruyama", "linear", "velocity", 0.0),
    ],
)
def test_stochastic_samplers_sample_the_data_distribution(sampler, path, prediction, eta):
    n = 8192
    fn = exact_apply_fn(path, prediction, MU[None], STD)
    noise = jax.random.normal(jax.random.key(5), (n, 2))
    run = make_runtime_sampler(fn, path=path, prediction=prediction, sampler=sampler)
    x = np.asarray(run(None, noise, jnp.zeros(n, jnp.int32), _keys(n), 250, eta, 1.0, FULL))
    # MC standard errors: STD / sqrt(n) = 0.0044 for the mean, STD / sqrt(2n) = 0.0031 for the
    # std; 4 standard errors plus the O(1/N) discretisation bias (weak order 1: the std of DDPM
    # on ddpm_linear is low by 0.05, 0.03, 0.013 at 50, 100, 250 steps).
    np.testing.assert_allclose(x.mean(0), MU, atol=4 * STD / np.sqrt(n) + 0.01)
    np.testing.assert_allclose(x.std(0), STD, atol=4 * STD / np.sqrt(2 * n) + 0.015)
    # Seeded: the same keys give the same samples.
    y = np.asarray(run(None, noise, jnp.zeros(n, jnp.int32), _keys(n), 250, eta, 1.0, FULL))
    np.testing.assert_array_equal(x, y)


def _two_class_model(path="linear", prediction="velocity"):
    # label 0 -> mean -2, label 1 -> mean +2, null label 2 -> mean 0; all with std 0.5.
    means = np.array([[-2.0], [2.0], [0.0]], np.float32)
    return exact_apply_fn(path, prediction, means, 0.5)


def test_cfg_scale_one_and_empty_interval_equal_the_conditional_model():
    fn = _two_class_model()
    noise = jax.random.normal(jax.random.key(6), (64, 1))
    labels = jnp.arange(64, dtype=jnp.int32) % 2
    kw = dict(path="linear", prediction="velocity", sampler="heun")
    guided = make_runtime_sampler(fn, null_label=2, guided=True, **kw)
    plain = make_runtime_sampler(fn, **kw)
    cond = plain(None, noise, labels, None, 8, 0.0, 1.0, FULL)
    np.testing.assert_allclose(
        guided(None, noise, labels, None, 8, 0.0, 1.0, FULL), cond, atol=1e-5
    )
    # Scale 3 with the interval [0.9, 0.95], which holds none of Heun's times (1, 7/8, ...).
    off = guided(None, noise, labels, None, 8, 0.0, 3.0, jnp.array([0.9, 0.95]))
    np.testing.assert_allclose(off, cond, atol=1e-5)
    on = guided(None, noise, labels, None, 8, 0.0, 3.0, FULL)
    assert float(jnp.abs(on - cond).min()) > 0.5  # guided means are at +-6, not +-2


def test_guidance_interval_switches_guidance_per_time():
    fn = _two_class_model()
    x = jax.random.normal(jax.random.key(7), (4, 1))
    labels = jnp.array([0, 1, 0, 1])
    interval = (0.3, 0.6)
    for t, inside in ((0.2, False), (0.3, True), (0.5, True), (0.7, False)):
        tv = jnp.full((4,), t)
        out = guided_output(fn, None, x, tv, labels, 2.5, 2, interval, guided=True)
        cond = fn(None, x, tv * 1000.0, labels)
        uncond = fn(None, x, tv * 1000.0, jnp.full_like(labels, 2))
        want = uncond + 2.5 * (cond - uncond) if inside else cond
        np.testing.assert_allclose(out, want, atol=1e-5, err_msg=str(t))


def test_bad_sampler_arguments_are_one_line_errors():
    with pytest.raises(SamplerError, match="unknown sampler 'plms'; known: ddim") as e:
        check_sampler("plms")
    assert "\n" not in str(e.value)
    for steps in (0, -3):
        with pytest.raises(SamplerError, match="--steps must be a positive integer"):
            check_sampler("ddim", steps)
    with pytest.raises(SamplerError, match="eta"):
        check_sampler("ddim", 10, 1.5)
    for name in SAMPLERS:
        check_sampler(name, 1, 0.0)


def test_ddim_step_noise_has_variance_eta_squared():
    """One DDIM step from t to s adds noise of variance c^2 = eta^2 sigma_s^2 sigma_{t|s}^2 /
    sigma_t^2, sigma_{t|s}^2 = sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2 (Song et al. 2021,
    eq. 16). From one fixed x_t, the x0_hat returned at t_min = s is mu + k (x_s - alpha_s mu)
    with k = alpha_s STD^2 / (alpha_s^2 STD^2 + sigma_s^2), so its variance over the step's
    noise is k^2 c^2."""
    t, s, eta, n = 0.9, 0.4, 0.5, 8192
    fn = exact_apply_fn("cosine", "v", MU[None], STD)
    run = make_runtime_sampler(fn, path="cosine", prediction="v", sampler="ddim", t_max=t, t_min=s)
    x_t = jnp.broadcast_to(jnp.array([0.3, -0.7]), (n, 2))
    x = np.asarray(run(None, x_t, jnp.zeros(n, jnp.int32), _keys(n, 9), 1, eta, 1.0, FULL))
    a_t, s_t, a_s, s_s = (f(np.pi / 2 * v) for v in (t, s) for f in (np.cos, np.sin))
    c2 = eta**2 * s_s**2 * (s_t**2 - (a_t / a_s) ** 2 * s_s**2) / s_t**2
    k = a_s * STD**2 / (a_s**2 * STD**2 + s_s**2)
    # The sample variance of 2 x 8192 draws is within 3% (4 standard errors).
    np.testing.assert_allclose(x.var(0), k**2 * c2, rtol=0.06)
