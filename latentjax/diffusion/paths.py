"""Gaussian noising paths x_t = alpha(t) x0 + sigma(t) eps, t in [0, 1] (data at 0, noise at 1),
and conversions between what a network predicts and the pair (x0, eps).

Paths (select by name):
- ``linear``: alpha = 1 - t, sigma = t — rectified flow / flow matching (Liu et al. 2022;
  Lipman et al. 2022; SiT, Ma et al. 2024).
- ``cosine``: alpha = cos(pi t / 2), sigma = sin(pi t / 2) — variance preserving, the continuous
  form of the cosine schedule (Nichol & Dhariwal 2021).
- ``ddpm_linear``, ``ddpm_scaled_linear``, ``ddpm_cosine``: the discrete-time variance-preserving
  schedules of DDPM (betas linear from 1e-4 to 0.02 over 1000 steps; Ho et al. 2020, sec. 4),
  Stable Diffusion / LDM (sqrt(beta) linear from sqrt(0.00085) to sqrt(0.012); Rombach et al.
  2022) and improved DDPM (alpha_bar(n) = f(n) / f(0), f(n) = cos((n / N + 0.008) / 1.008 pi / 2)^2,
  betas clipped at 0.999; Nichol & Dhariwal 2021, eq. 17). alpha = sqrt(alpha_bar),
  sigma = sqrt(1 - alpha_bar). Time t = n / N puts the DDPM step index n (after n noising steps)
  at t, so the network's time input 1000 t is the familiar integer timestep; between grid points
  log alpha_bar is interpolated linearly (it is a cumulative sum of log(1 - beta_n), so this is
  the natural continuous extension), which lets every sampler run any number of steps on them.

Prediction types (what the network outputs; all are linear in (x0, eps)):
- ``eps``: the noise eps.
- ``x0``: the clean data x0.
- ``v``: alpha eps - sigma x0 (Salimans & Ho 2022). Its usual meaning (the "angular velocity")
  assumes a variance-preserving path such as ``cosine``; on other paths it is still a valid,
  invertible target, defined by this formula.
- ``velocity``: dx_t/dt = alpha'(t) x0 + sigma'(t) eps, the flow-matching target
  (on ``linear``: eps - x0; on ``cosine``: (pi / 2) v).

Endpoints: ``eps`` prediction cannot give x0 where alpha = 0 (t = 1), ``x0`` prediction cannot give
eps where sigma = 0 (t = 0); :func:`valid_t_range` says which times a prediction type can be
evaluated at, and :meth:`Path.clip` clips times into a closed interval.

Time shift (:func:`shift_time`): t -> s t / (1 + (s - 1) t), Stable Diffusion 3's
"resolution-dependent shifting of timestep schedules" (Esser et al. 2024, sec. 5.3.2). It keeps
0 and 1 and moves every time in between towards the noise end for s > 1. It multiplies the odds
t / (1 - t) by s (adds log s to the logit of t, so a logit-normal time becomes logit-normal at
location log s). On ``linear`` this is SD3's argument: the mean of n noisy values of a constant
image is known to a standard deviation t / ((1 - t) sqrt(n)), so an image of n = s^2 m values at
the shifted time is as uncertain as one of m values at the unshifted time. SD3 takes
s = sqrt(n / m) for n latent values over the m its schedule was chosen for (s = 3 at 1024 px).
Training draws shifted times and the samplers walk a shifted grid, so both spend more of their
effort at high noise, where a large latent's global layout is decided.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

CONTINUOUS_PATHS = ("linear", "cosine")
DISCRETE_PATHS = ("ddpm_linear", "ddpm_scaled_linear", "ddpm_cosine")
PATHS = CONTINUOUS_PATHS + DISCRETE_PATHS
DISCRETE_STEPS = 1000
PREDICTIONS = ("eps", "x0", "v", "velocity")

# Distance kept from a singular endpoint: alpha(1 - 1e-3) ~ 1.6e-3 on cosine, 1e-3 on linear.
ENDPOINT_MARGIN = 1e-3

_HALF_PI = 0.5 * math.pi


def shift_time(t, shift):
    """``t`` moved by the time shift ``shift`` > 0 (module docstring): s t / (1 + (s - 1) t).
    1 leaves ``t`` as it is, bit for bit."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def unshift_time(t, shift):
    """The inverse of :func:`shift_time`: t / (s - (s - 1) t)."""
    return t / (shift - (shift - 1.0) * t)


@functools.cache
def discrete_log_alpha_bar(name: str, num_steps: int = DISCRETE_STEPS) -> np.ndarray:
    """log alpha_bar at n = 0, 1, ..., N (float64 [N + 1]; 0 at n = 0: no noise yet)."""
    n = num_steps
    if name == "ddpm_linear":
        betas = np.linspace(1e-4, 0.02, n, dtype=np.float64)
    elif name == "ddpm_scaled_linear":
        betas = np.linspace(0.00085**0.5, 0.012**0.5, n, dtype=np.float64) ** 2
    elif name == "ddpm_cosine":
        s = 0.008
        f = np.cos((np.arange(n + 1) / n + s) / (1 + s) * _HALF_PI) ** 2
        alpha_bar = f / f[0]
        betas = np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, 0.999)
    else:
        raise ValueError(f"unknown discrete schedule {name!r}; known: {DISCRETE_PATHS}")
    return np.concatenate([[0.0], np.cumsum(np.log1p(-betas))])


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; known: {PREDICTIONS}")


@dataclasses.dataclass(frozen=True)
class Path:
    """A Gaussian path by name; ``t`` is any float array (scalars included)."""

    name: str

    def __post_init__(self):
        if self.name not in PATHS:
            raise ValueError(f"unknown path {self.name!r}; known: {PATHS}")

    def alpha(self, t: jax.Array) -> jax.Array:
        t = jnp.asarray(t)
        if self.name == "linear":
            return 1.0 - t
        if self.name == "cosine":
            return jnp.cos(_HALF_PI * t)
        return jnp.exp(0.5 * self._log_alpha_bar(t))

    def sigma(self, t: jax.Array) -> jax.Array:
        t = jnp.asarray(t)
        if self.name == "linear":
            return t
        if self.name == "cosine":
            return jnp.sin(_HALF_PI * t)
        return jnp.sqrt(jnp.maximum(-jnp.expm1(self._log_alpha_bar(t)), 0.0))

    def d_alpha(self, t: jax.Array) -> jax.Array:
        """alpha'(t)."""
        t = jnp.asarray(t)
        if self.name == "linear":
            return -jnp.ones_like(t)
        if self.name == "cosine":
            return -_HALF_PI * jnp.sin(_HALF_PI * t)
        return jax.jvp(self.alpha, (t,), (jnp.ones_like(t),))[1]  # elementwise, so jvp = diag

    def d_sigma(self, t: jax.Array) -> jax.Array:
        """sigma'(t) (infinite at t = 0 on the discrete schedules, where sigma ~ sqrt(t))."""
        t = jnp.asarray(t)
        if self.name == "linear":
            return jnp.ones_like(t)
        if self.name == "cosine":
            return _HALF_PI * jnp.cos(_HALF_PI * t)
        return jax.jvp(self.sigma, (t,), (jnp.ones_like(t),))[1]

    def _log_alpha_bar(self, t: jax.Array) -> jax.Array:
        table = discrete_log_alpha_bar(self.name)
        n = len(table) - 1
        grid = jnp.arange(n + 1, dtype=t.dtype if jnp.issubdtype(t.dtype, jnp.floating) else None)
        return jnp.interp(t * n, grid, jnp.asarray(table, grid.dtype))

    def log_snr(self, t: jax.Array) -> jax.Array:
        """lambda(t) = log(alpha^2 / sigma^2) (DPM-Solver's 2 lambda)."""
        return 2.0 * (jnp.log(self.alpha(t)) - jnp.log(self.sigma(t)))

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.alpha(t), self.sigma(t)

    def derivatives(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(alpha'(t), sigma'(t))."""
        return self.d_alpha(t), self.d_sigma(t)

    def clip(self, t: jax.Array, t_min: float = 0.0, t_max: float = 1.0) -> jax.Array:
        """``t`` clipped to [t_min, t_max], e.g. to keep away from a singular endpoint."""
        return jnp.clip(t, t_min, t_max)

    def marginal(self, x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
        """x_t = alpha(t) x0 + sigma(t) eps. ``t``: [B] (or scalar), ``x0``/``eps``: [B, ...]."""
        return _bcast(self.alpha(t), x0) * x0 + _bcast(self.sigma(t), x0) * eps


def valid_t_range(prediction: str) -> tuple[float, float]:
    """Closed interval of times at which :func:`to_x0_eps` is finite for ``prediction``.

    The continuous paths have alpha(1) = 0 and every path has sigma(0) = 0, so ``eps`` excludes
    t = 1 and ``x0`` excludes t = 0 (the samplers never need eps_hat at t = 0, see
    ``samplers.py``)."""
    _check_prediction(prediction)
    if prediction == "eps":
        return 0.0, 1.0 - ENDPOINT_MARGIN
    if prediction == "x0":
        return ENDPOINT_MARGIN, 1.0
    return 0.0, 1.0


def _bcast(a: jax.Array, like: jax.Array) -> jax.Array:
    """[B] -> [B, 1, 1, ...] (or a scalar as is) to broadcast against ``like``."""
    a = jnp.asarray(a)
    return jnp.reshape(a, a.shape + (1,) * (like.ndim - a.ndim)) if a.ndim else a


def target(path: Path, prediction: str, x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
    """What a network predicting ``prediction`` should output at (x0, eps, t).

    ``x0``, ``eps``: [B, ...]; ``t``: [B] or a scalar."""
    _check_prediction(prediction)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    alpha, sigma = _bcast(path.alpha(t), x0), _bcast(path.sigma(t), x0)
    if prediction == "v":
        return alpha * eps - sigma * x0
    d_alpha, d_sigma = _bcast(path.d_alpha(t), x0), _bcast(path.d_sigma(t), x0)
    return d_alpha * x0 + d_sigma * eps


def to_x0_eps(
    path: Path, prediction: str, output: jax.Array, x_t: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Inverts :func:`target`: (x0_hat, eps_hat) from a network ``output`` at (x_t, t).

    Each case solves the 2x2 linear system {x_t = alpha x0 + sigma eps, output = p x0 + q eps}.
    ``v`` and ``velocity`` are well posed on all of [0, 1]; see :func:`valid_t_range` for the
    others."""
    _check_prediction(prediction)
    alpha, sigma = _bcast(path.alpha(t), x_t), _bcast(path.sigma(t), x_t)
    if prediction == "eps":
        return (x_t - sigma * output) / alpha, output
    if prediction == "x0":
        return output, (x_t - alpha * output) / sigma
    if prediction == "v":
        # alpha x_t - sigma v = (alpha^2 + sigma^2) x0 and sigma x_t + alpha v = (...) eps.
        norm = alpha**2 + sigma**2
        return (alpha * x_t - sigma * output) / norm, (sigma * x_t + alpha * output) / norm
    d_alpha, d_sigma = _bcast(path.d_alpha(t), x_t), _bcast(path.d_sigma(t), x_t)
    # det = alpha sigma' - sigma alpha' = alpha^2 d(sigma / alpha)/dt: 1 on linear, pi / 2 on
    # cosine, positive on the discrete schedules (sigma / alpha grows with t), so never zero.
    det = alpha * d_sigma - sigma * d_alpha
    return (d_sigma * x_t - sigma * output) / det, (alpha * output - d_alpha * x_t) / det
