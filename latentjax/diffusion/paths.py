"""Gaussian noising paths x_t = alpha(t) x0 + sigma(t) eps, t in [0, 1] (data at 0, noise at 1),
and conversions between what a network predicts and the pair (x0, eps).

Paths:
- ``linear``: alpha = 1 - t, sigma = t — rectified flow / flow matching (Liu et al. 2022;
  Lipman et al. 2022; SiT, Ma et al. 2024).
- ``cosine``: alpha = cos(pi t / 2), sigma = sin(pi t / 2) — variance preserving, the continuous
  cosine schedule (Nichol & Dhariwal 2021).

Prediction targets:
- ``eps``: the noise.
- ``x0``: the clean data.
- ``v``: alpha eps - sigma x0 (Salimans & Ho 2022).
- ``velocity``: dx_t/dt = alpha'(t) x0 + sigma'(t) eps, the flow-matching target
  (for ``linear``: eps - x0).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

PATHS = ("linear", "cosine")
PREDICTIONS = ("eps", "x0", "v", "velocity")


@dataclasses.dataclass(frozen=True)
class Path:
    name: str

    def __post_init__(self):
        if self.name not in PATHS:
            raise ValueError(f"unknown path {self.name!r}; known: {PATHS}")

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        if self.name == "linear":
            return 1.0 - t, t
        return jnp.cos(0.5 * math.pi * t), jnp.sin(0.5 * math.pi * t)

    def derivatives(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(alpha'(t), sigma'(t))."""
        if self.name == "linear":
            return -jnp.ones_like(t), jnp.ones_like(t)
        c = 0.5 * math.pi
        return -c * jnp.sin(c * t), c * jnp.cos(c * t)


def _bcast(a: jax.Array, like: jax.Array) -> jax.Array:
    """[B] -> [B, 1, 1, ...] to broadcast against ``like``."""
    return jnp.reshape(a, a.shape + (1,) * (like.ndim - a.ndim))


def target(path: Path, prediction: str, x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
    """What a network predicting ``prediction`` should output at (x0, eps, t). ``t``: [B]."""
    alpha, sigma = (_bcast(a, x0) for a in path.alpha_sigma(t))
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return alpha * eps - sigma * x0
    if prediction == "velocity":
        d_alpha, d_sigma = (_bcast(a, x0) for a in path.derivatives(t))
        return d_alpha * x0 + d_sigma * eps
    raise ValueError(f"unknown prediction {prediction!r}; known: {PREDICTIONS}")


def to_x0_eps(
    path: Path, prediction: str, output: jax.Array, x_t: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Inverts :func:`target`: (x0_hat, eps_hat) from a network output at (x_t, t).

    Each case solves the 2x2 linear system {x_t = alpha x0 + sigma eps, out = p x0 + q eps}.
    ``eps`` prediction cannot give x0 where alpha = 0 (t = 1 on both paths) and ``x0``
    prediction cannot give eps where sigma = 0 (t = 0); ``v`` and ``velocity`` are well posed
    on all of [0, 1]. The sampler starts eps-prediction models just below t = 1."""
    alpha, sigma = (_bcast(a, x_t) for a in path.alpha_sigma(t))
    if prediction == "eps":
        return (x_t - sigma * output) / alpha, output
    if prediction == "x0":
        return output, (x_t - alpha * output) / sigma
    if prediction == "v":
        # alpha x_t - sigma v = (alpha^2 + sigma^2) x0; sigma x_t + alpha v = (...) eps
        norm = alpha**2 + sigma**2
        return (alpha * x_t - sigma * output) / norm, (sigma * x_t + alpha * output) / norm
    if prediction == "velocity":
        d_alpha, d_sigma = (_bcast(a, x_t) for a in path.derivatives(t))
        det = alpha * d_sigma - sigma * d_alpha  # > 0 for both paths on [0, 1]
        return (d_sigma * x_t - sigma * output) / det, (alpha * output - d_alpha * x_t) / det
    raise ValueError(f"unknown prediction {prediction!r}; known: {PREDICTIONS}")
