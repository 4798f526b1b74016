"""Paths, the DDIM/Euler sampler and the diffusion loss against closed forms for Gaussian data.

For x0 ~ N(mu, s^2 I) and x_t = alpha x0 + sigma eps, x_t ~ N(alpha mu, (alpha^2 s^2 + sigma^2) I),
and the posterior means are exact:
    E[x0 | x_t]  = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha mu)
    E[eps | x_t] = sigma / (alpha^2 s^2 + sigma^2) (x_t - alpha mu)
Every prediction target is linear in (x0, eps), so its regression optimum is target(E x0, E eps).
The probability-flow ODE of a Gaussian is affine per dimension and keeps the standardised
coordinate (x_t - alpha mu) / sqrt(alpha^2 s^2 + sigma^2) fixed, so from x_T at time T it ends at
    x0 = mu + s (x_T - alpha(T) mu) / sqrt(alpha(T)^2 s^2 + sigma(T)^2).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentjax.diffusion.paths import (
    CONTINUOUS_PATHS,
    PATHS,
    PREDICTIONS,
    Path,
    shift_time,
    target,
    to_x0_eps,
    unshift_time,
)
from latentjax.diffusion.samplers import (
    SAMPLE_STATIC_ARGNAMES,
    default_t_max,
    guided_output,
    make_sampler,
    sample,
)
from latentjax.losses.diffusion import diffusion_loss, sample_t


def exact_apply_fn(path: str, prediction: str, means: np.ndarray, std: float):
    """A model whose output is the exact regression optimum for x0 ~ N(means[label], std^2 I).

    ``means``: [num_labels, D]. ``params``, when not None, overrides ``std`` (so one compiled
    program serves several spreads); labels pick the class mean; t is in [0, 1000] like the DiT."""
    p = Path(path)
    means = jnp.asarray(means, jnp.float32)

    def apply_fn(params, x_t, t1000, labels):
        s = std if params is None else params
        t = t1000 / 1000.0
        alpha = p.alpha(t)[:, None]
        sigma = p.sigma(t)[:, None]
        mu = means[labels]  # [B, D]
        var = alpha**2 * s**2 + sigma**2
        resid = x_t - alpha * mu
        x0_hat = mu + alpha * s**2 / var * resid
        eps_hat = sigma / var * resid
        return target(p, prediction, x0_hat, eps_hat, t)

    return apply_fn


def ode_solution(path: str, x_T: np.ndarray, t_max: float, mu: np.ndarray, std: float):
    p = Path(path)
    a, s = float(p.alpha(t_max)), float(p.sigma(t_max))
    return mu + std * (x_T - a * mu) / np.sqrt(a**2 * std**2 + s**2)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_conversion_round_trip(path, prediction):
    p = Path(path)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x0 = jax.random.normal(k1, (16, 4, 4, 3))
    eps = jax.random.normal(k2, (16, 4, 4, 3))
    lo, hi = 0.01, 0.99
    t = jax.random.uniform(k3, (16,), minval=lo, maxval=hi)
    x_t = p.marginal(x0, eps, t)
    out = target(p, prediction, x0, eps, t)
    x0_hat, eps_hat = to_x0_eps(p, prediction, out, x_t, t)
    np.testing.assert_allclose(x0_hat, x0, atol=2e-4)
    np.testing.assert_allclose(eps_hat, eps, atol=2e-4)


@pytest.mark.parametrize("path", PATHS)
def test_path_derivatives_and_velocity(path):
    p = Path(path)
    t = jnp.linspace(0.0, 1.0, 11)
    autodiff = jax.jit(lambda t: (jax.vmap(jax.grad(p.alpha))(t), jax.vmap(jax.grad(p.sigma))(t)))
    np.testing.assert_allclose(autodiff(t), p.derivatives(t), atol=1e-5)
    # velocity = dx_t/dt along a fixed (x0, eps).
    x0, eps = jnp.array([[0.3, -1.2]]), jnp.array([[0.7, 0.1]])
    tt = jnp.array([0.4])
    dxdt = jax.jacfwd(lambda s: p.marginal(x0, eps, s))(tt)[..., 0]
    np.testing.assert_allclose(target(p, "velocity", x0, eps, tt), dxdt, atol=1e-5)
    # Endpoints of the velocity/v conversions are finite (on the discrete schedules
    # sigma ~ sqrt(t) near 0, so sigma'(0) and velocity's conversion at t = 0 are infinite).
    ends = jnp.array([0.0, 1.0]) if path in CONTINUOUS_PATHS else jnp.array([1e-3, 1.0])
    x = jnp.ones((2, 2))
    for pred in ("v", "velocity"):
        assert np.isfinite(np.asarray(to_x0_eps(p, pred, x, x, ends))).all()


def test_unknown_names_fail():
    with pytest.raises(ValueError, match="unknown path"):
        Path("sqrt")
    with pytest.raises(ValueError, match="unknown prediction"):
        target(Path("linear"), "score", jnp.zeros(1), jnp.zeros(1), jnp.zeros(1))
    with pytest.raises(ValueError, match="t_max"):
        fn = exact_apply_fn("cosine", "eps", np.zeros((1, 1)), 1.0)
        sample(fn, None, jnp.zeros((1, 1)), jnp.zeros(1, jnp.int32), path="cosine",
               prediction="eps", num_steps=2, t_max=1.0)  # fmt: skip


@pytest.mark.parametrize(("path", "prediction"), [("linear", "velocity"), ("cosine", "eps")])
def test_sampler_matches_gaussian_marginal(path, prediction):
    mu, std = np.array([1.5, -0.5], np.float32), 0.5
    fn = exact_apply_fn(path, prediction, mu[None], std)
    run = make_sampler(fn, path=path, prediction=prediction, num_steps=50)
    noise = jax.random.normal(jax.random.key(1), (4096, 2))
    x = np.asarray(run(None, noise, jnp.zeros(4096, jnp.int32)))
    np.testing.assert_allclose(x.mean(0), mu, atol=0.05)
    np.testing.assert_allclose(x.std(0), std, atol=0.03)


def test_linear_velocity_ddim_is_euler():
    mu, std = np.array([2.0, -1.0], np.float32), 0.3
    fn = exact_apply_fn("linear", "velocity", mu[None], std)
    noise = jax.random.normal(jax.random.key(2), (64, 2))
    labels = jnp.zeros(64, jnp.int32)
    n = 7
    got = make_sampler(fn, path="linear", prediction="velocity", num_steps=n)(None, noise, labels)
    # Explicit Euler on dx/dt = v(x, t) from t = 1 to 0.
    x, ts, model = noise, np.linspace(1.0, 0.0, n + 1), jax.jit(fn)
    for t, s in zip(ts[:-1], ts[1:], strict=True):
        v = model(None, x, jnp.full((64,), t * 1000.0), labels)
        x = x + (s - t) * v
    np.testing.assert_allclose(got, x, atol=1e-5)


@pytest.mark.parametrize(("path", "prediction"), [("linear", "velocity"), ("cosine", "v")])
def test_sampler_converges_first_order(path, prediction):
    mu, std = np.array([1.0, -2.0], np.float32), 0.4
    fn = exact_apply_fn(path, prediction, mu[None], std)
    noise = jax.random.normal(jax.random.key(3), (8, 2))
    labels = jnp.zeros(8, jnp.int32)
    exact = ode_solution(path, np.asarray(noise), 1.0, mu, std)
    errors = []
    for n in (10, 20, 40):
        run = make_sampler(fn, path=path, prediction=prediction, num_steps=n)
        errors.append(float(np.abs(np.asarray(run(None, noise, labels)) - exact).max()))
    ratios = np.array(errors[1:]) / np.array(errors[:-1])
    assert errors[-1] < 0.05, errors
    # Halving the step halves the error: first order (Euler / DDIM).
    assert np.all((ratios > 0.35) & (ratios < 0.65)), (errors, ratios)


def test_point_mass_is_exact_in_one_step():
    # DDIM's x0_hat is exact for a point mass, so one step already lands on it.
    mu = np.array([0.7, -0.2], np.float32)
    for path, prediction in (("linear", "velocity"), ("cosine", "x0")):
        fn = exact_apply_fn(path, prediction, mu[None], 0.0)
        noise = jax.random.normal(jax.random.key(4), (5, 2))
        x = sample(fn, None, noise, jnp.zeros(5, jnp.int32), path=path, prediction=prediction,
                   num_steps=1)  # fmt: skip
        np.testing.assert_allclose(x, np.broadcast_to(mu, (5, 2)), atol=1e-5)


def test_t_min_final_denoise():
    mu, std = np.array([0.5], np.float32), 0.5
    fn = exact_apply_fn("cosine", "eps", mu[None], std)
    noise = jax.random.normal(jax.random.key(5), (2048, 1))
    labels = jnp.zeros(2048, jnp.int32)
    x = make_sampler(fn, path="cosine", prediction="eps", num_steps=40, t_min=0.05)(
        None, noise, labels
    )
    # Returns x0_hat at t_min: its spread is shrunk by the posterior, mean still mu.
    assert abs(float(x.mean()) - 0.5) < 0.05
    assert 0.4 < float(x.std()) < std


def test_sampler_is_one_program():
    calls = []
    base = exact_apply_fn("linear", "velocity", np.zeros((1, 2)), 1.0)

    def counting(params, x, t, y):
        calls.append(x.shape)
        return base(params, x, t, y)

    noise = jnp.ones((3, 2))
    run = make_sampler(counting, path="linear", prediction="velocity", num_steps=100)
    run(None, noise, jnp.zeros(3, jnp.int32))
    assert len(calls) == 1  # traced once; the 100 steps are a loop in the compiled program
    jaxpr = jax.make_jaxpr(
        functools.partial(sample, base, path="linear", prediction="velocity", num_steps=100)
    )(None, noise, jnp.zeros(3, jnp.int32))
    assert "while" in str(jaxpr) or "scan" in str(jaxpr)
    # The documented static argnames jit ``sample`` directly.
    jitted = jax.jit(sample, static_argnames=SAMPLE_STATIC_ARGNAMES)
    out = jitted(base, None, noise, jnp.zeros(3, jnp.int32), path="linear",
                 prediction="velocity", num_steps=4)  # fmt: skip
    assert out.shape == (3, 2)


def _two_class_model(prediction, path="linear"):
    # label 0 -> mean -2, label 1 -> mean +2, null label 2 -> mean 0; all with std 0.5.
    means = np.array([[-2.0], [2.0], [0.0]], np.float32)
    return exact_apply_fn(path, prediction, means, 0.5), means


def test_cfg_scale_one_equals_conditional():
    fn, _ = _two_class_model("velocity")
    batch_sizes = []

    def counting(params, x, t, y):
        batch_sizes.append(x.shape[0])
        return fn(params, x, t, y)

    x = jax.random.normal(jax.random.key(6), (6, 1))
    labels = jnp.array([0, 1, 0, 1, 0, 1])
    t = jnp.full((6,), 0.5)
    out = guided_output(counting, None, x, t, labels, cfg_scale=1.0, null_label=2)
    np.testing.assert_allclose(out, fn(None, x, t * 1000.0, labels))
    assert batch_sizes == [6]  # one call on the plain batch
    guided = guided_output(counting, None, x, t, labels, cfg_scale=3.0, null_label=2)
    assert batch_sizes == [6, 12]  # one call on the doubled batch
    cond, uncond = (
        fn(None, x, t * 1000.0, labels),
        fn(None, x, t * 1000.0, jnp.full_like(labels, 2)),
    )
    np.testing.assert_allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-5)

    kw = dict(path="linear", prediction="velocity", num_steps=3)
    a = make_sampler(fn, cfg_scale=1.0, null_label=2, **kw)(None, x, labels)
    b = make_sampler(fn, **kw)(None, x, labels)
    np.testing.assert_allclose(a, b)


@pytest.mark.parametrize(("path", "prediction"), [("linear", "velocity"), ("cosine", "eps")])
def test_class_conditional_and_guided_means(path, prediction):
    fn, means = _two_class_model(prediction, path)
    n = 2048
    labels = jnp.concatenate([jnp.zeros(n, jnp.int32), jnp.ones(n, jnp.int32)])
    noise = jax.random.normal(jax.random.key(7), (2 * n, 1))
    x = make_sampler(fn, path=path, prediction=prediction, num_steps=40)(None, noise, labels)
    for k in (0, 1):
        assert abs(float(x[labels == k].mean()) - means[k, 0]) < 0.05
    # Guided outputs of Gaussians with equal variance are the exact model for the mean
    # mu_null + w (mu_k - mu_null): here w = 1.5 gives +-3.
    run = make_sampler(
        fn, path=path, prediction=prediction, num_steps=40, cfg_scale=1.5, null_label=2
    )
    x = run(None, noise, labels)
    for k in (0, 1):
        assert abs(float(x[labels == k].mean()) - 1.5 * means[k, 0]) < 0.05
        assert abs(float(x[labels == k].std()) - 0.5) < 0.03


@pytest.mark.parametrize(
    ("path", "prediction", "t_sampling"),
    [("linear", "velocity", "logit_normal"), ("cosine", "v", "uniform")],
)
def test_loss_zero_for_exact_model_on_point_mass(path, prediction, t_sampling):
    mu = np.array([0.8, -0.3], np.float32)
    x0 = jnp.broadcast_to(jnp.asarray(mu), (256, 2))
    labels = jnp.zeros(256, jnp.int32)
    exact = exact_apply_fn(path, prediction, mu[None], 0.0)
    loss_fn = jax.jit(
        functools.partial(
            diffusion_loss, exact, path=path, prediction=prediction, t_sampling=t_sampling
        )
    )
    loss, aux = loss_fn(jnp.float32(0.0), x0, labels, jax.random.key(8))
    assert aux["t"].shape == (256,)
    assert float(loss) < 1e-6
    # On spread-out data (std 1) even the exact model has irreducible error.
    x0 = x0 + jax.random.normal(jax.random.key(9), x0.shape)
    loss, _ = loss_fn(jnp.float32(1.0), x0, labels, jax.random.key(8))
    assert float(loss) > 0.05


def test_loss_gradient_flows():
    def linear_model(params, x, t, y):  # [B, H, W, C] -> [B, H, W, C]
        del y
        return x * params["w"] + params["b"] + (t / 1000.0)[:, None, None, None] * params["c"]

    params = {"w": jnp.array(0.5), "b": jnp.zeros((3,)), "c": jnp.array(0.1)}
    x0 = jax.random.normal(jax.random.key(10), (4, 2, 2, 3))
    labels = jnp.zeros(4, jnp.int32)
    loss_fn = functools.partial(diffusion_loss, linear_model, path="cosine", prediction="v")
    grads = jax.jit(jax.grad(lambda p: loss_fn(p, x0, labels, jax.random.key(11))[0]))(params)
    for name, g in grads.items():
        assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).sum()) > 0.0, name


def test_sample_t_ranges():
    for kind in ("uniform", "logit_normal"):
        t = sample_t(jax.random.key(12), 10_000, kind)
        assert float(t.min()) > 0.0 and float(t.max()) < 1.0
    t = sample_t(jax.random.key(12), 10_000, "logit_normal")
    assert abs(float(t.mean()) - 0.5) < 0.02 and float(t.std()) < 0.25  # peaks in the middle
    with pytest.raises(ValueError):
        sample_t(jax.random.key(0), 4, "beta")
    assert default_t_max("eps") < 1.0 and default_t_max("velocity") == 1.0


def test_time_shift_closed_form():
    t = np.linspace(0.0, 1.0, 101)
    for s in (0.5, 3.0):
        shifted = shift_time(t, s)
        assert shifted[0] == 0.0 and shifted[-1] == 1.0
        inner = slice(1, -1)
        # The odds t / (1 - t) times s: the logit plus log s (SD3, sec. 5.3.2).
        np.testing.assert_allclose(
            np.log(shifted[inner] / (1 - shifted[inner])) - np.log(t[inner] / (1 - t[inner])),
            np.log(s),
            rtol=1e-12,
        )
        np.testing.assert_allclose(unshift_time(shifted, s), t, rtol=1e-12, atol=1e-15)
    assert shift_time(0.5, 3.0) == 0.75
    # A shift of 1 leaves float32 times as they are, bit for bit (no run's numbers move).
    t32 = jax.random.uniform(jax.random.key(0), (1000,))
    np.testing.assert_array_equal(shift_time(t32, jnp.float32(1.0)), t32)
    np.testing.assert_array_equal(unshift_time(t32, jnp.float32(1.0)), t32)


def test_shifted_training_times_follow_the_shifted_law():
    s = 3.0
    t = np.asarray(sample_t(jax.random.key(13), 40_000, "logit_normal", shift=s), np.float64)
    logit = np.log(t / (1 - t))
    # Logit-normal at location log s, scale 1 (4 standard errors).
    assert abs(logit.mean() - np.log(s)) < 4 / np.sqrt(len(t)), logit.mean()
    assert abs(logit.std() - 1.0) < 0.02
    # Uniform times, shifted: P(t <= x) = unshift_time(x, s) (Kolmogorov-Smirnov at 1%).
    from scipy import stats

    u = np.asarray(sample_t(jax.random.key(14), 20_000, "uniform", shift=s), np.float64)
    assert stats.kstest(u, lambda x: unshift_time(np.clip(x, 0, 1), s)).pvalue > 0.01
    assert stats.kstest(u, "uniform").pvalue < 1e-6  # and not the unshifted law


def test_loss_draws_its_times_with_the_shift():
    fn = exact_apply_fn("linear", "velocity", np.zeros((1, 2)), 1.0)
    x0 = jnp.ones((64, 2))
    labels = jnp.zeros(64, jnp.int32)
    kw = {"path": "linear", "prediction": "velocity", "t_sampling": "logit_normal"}
    _, plain = diffusion_loss(fn, None, x0, labels, jax.random.key(15), **kw)
    _, shifted = diffusion_loss(fn, None, x0, labels, jax.random.key(15), time_shift=3.0, **kw)
    np.testing.assert_allclose(shifted["t"], shift_time(plain["t"], 3.0), rtol=1e-6)


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_sampler_walks_the_shifted_grid(sampler):
    """The times the network is called at: uniform in the unshifted time, ends kept."""
    from latentjax.diffusion.samplers import make_runtime_sampler

    seen = []
    base = exact_apply_fn("linear", "velocity", np.zeros((1, 1)), 1.0)

    def spy(params, x, t, y):
        jax.debug.callback(lambda v: seen.append(float(np.asarray(v)[0])), t)
        return base(params, x, t, y)

    run = make_runtime_sampler(spy, path="linear", prediction="velocity", sampler=sampler)
    noise, labels = jnp.ones((1, 1)), jnp.zeros(1, jnp.int32)
    for n, s in ((8, 1.0), (8, 3.0), (5, 0.5)):
        seen.clear()
        run(None, noise, labels, None, np.int32(n), np.float32(0), np.float32(1),
            np.zeros(2, np.float32), np.float32(s))  # fmt: skip
        want = shift_time(np.linspace(1.0, 0.0, n + 1), s)
        calls = np.array(seen) / 1000.0
        if sampler == "euler":
            np.testing.assert_allclose(calls, want[:-1], rtol=1e-5, atol=1e-7)
        else:  # Heun: the predictor at each t_i, the corrector at t_{i+1} except at t = 0
            np.testing.assert_allclose(calls[0::2], want[:-1], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(calls[1::2], want[1:-1], rtol=1e-5, atol=1e-7)


def test_shifted_sampler_still_solves_the_ode():
    """A shifted grid is another discretisation of the same flow: Heun on it converges to the
    closed-form end point at second order (halving the steps quarters the error). Shifts above 1
    place the steps badly for a Gaussian, whose flow bends near the data end: a shift is for
    large latents, not free."""
    mu, std = np.array([1.0, -2.0], np.float32), 0.4
    fn = exact_apply_fn("linear", "velocity", mu[None], std)
    noise = jax.random.normal(jax.random.key(16), (8, 2))
    labels = jnp.zeros(8, jnp.int32)
    exact = ode_solution("linear", np.asarray(noise), 1.0, mu, std)

    def error(n, s):
        run = make_sampler(
            fn, path="linear", prediction="velocity", sampler="heun", num_steps=n, time_shift=s
        )
        return float(np.abs(np.asarray(run(None, noise, labels)) - exact).max())

    errors = np.array([error(n, 3.0) for n in (16, 32, 64)])
    assert errors[-1] < 0.01, errors
    ratios = errors[1:] / errors[:-1]
    assert np.all((ratios > 0.15) & (ratios < 0.35)), (errors, ratios)
    assert error(32, 1.0) < errors[1]
