"""Stage-2 objective: regress the network output onto the target of its prediction type.

Time is drawn uniformly or logit-normally (t = sigmoid(n), n ~ N(0, 1); Esser et al. 2024, eq. 19,
which puts more weight on the middle of the path), noise is standard normal, and the loss is a
(weighted) mean squared error over all elements. ``weighting="none"`` is DiT's "simple" loss and
flow matching's plain MSE.

Loss weightings are stated as a weight lambda(t) on the error of x0 (Kingma et al. 2021; Hang
et al. 2023, sec. 3): with x_t fixed, an error d in x0 is an error -alpha / sigma d in eps, so a
prediction ``out = p x0 + q eps`` has ||d out||^2 = (p - q alpha / sigma)^2 ||d x0||^2, and the
weight applied to the output's squared error is lambda(t) / (p - q alpha / sigma)^2. With
SNR = alpha^2 / sigma^2:

- ``min_snr``: lambda = min(SNR, gamma) (Min-SNR-gamma, Hang et al. 2023, eq. 7; gamma = 5 there).
  For eps prediction this is min(SNR, gamma) / SNR, for v on a VP path min(SNR, gamma) / (SNR + 1).
- ``snr``: lambda = SNR, the eps-prediction loss whatever the network predicts (Ho et al. 2020).
- ``snr_plus_one``: lambda = SNR + 1, the v-prediction loss on VP paths (Salimans & Ho 2022).
- ``truncated_snr``: lambda = max(SNR, 1) (Salimans & Ho 2022, sec. 4).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from latentjax.diffusion.paths import Path, _bcast, shift_time, target
from latentjax.diffusion.samplers import ApplyFn

T_SAMPLINGS = ("uniform", "logit_normal")
WEIGHTINGS = ("none", "min_snr", "snr", "snr_plus_one", "truncated_snr")

# Training times stay this far from the ends, where some targets have singular conversions.
T_EPS = 1e-5


def sample_t(
    rng: jax.Array,
    n: int,
    kind: str,
    t_min: float = T_EPS,
    t_max: float = 1.0 - T_EPS,
    shift: float = 1.0,
) -> jax.Array:
    """[n] times in [t_min, t_max], drawn by ``kind`` ("uniform" or "logit_normal"), then moved
    by the time shift ``shift`` (``paths.shift_time``; 1 = none)."""
    if kind == "uniform":
        t = jax.random.uniform(rng, (n,))
    elif kind == "logit_normal":
        t = jax.nn.sigmoid(jax.random.normal(rng, (n,)))  # location 0, scale 1 (SD3's default)
    else:
        raise ValueError(f"unknown t_sampling {kind!r}; known: {T_SAMPLINGS}")
    return jnp.clip(shift_time(t, shift), t_min, t_max)


def x0_weight(path: Path, weighting: str, t: jax.Array, gamma: float = 5.0) -> jax.Array:
    """lambda(t) [B]: the weight on the squared error of x0 that ``weighting`` stands for."""
    snr = jnp.exp(path.log_snr(t))
    if weighting == "min_snr":
        return jnp.minimum(snr, gamma)
    if weighting == "snr":
        return snr
    if weighting == "snr_plus_one":
        return snr + 1.0
    if weighting == "truncated_snr":
        return jnp.maximum(snr, 1.0)
    raise ValueError(f"unknown loss weighting {weighting!r}; known: {WEIGHTINGS}")


def output_weight(
    path: Path, prediction: str, weighting: str, t: jax.Array, gamma: float = 5.0
) -> jax.Array:
    """[B] weights on the output's squared error equal to lambda(t) on x0's (module docstring)."""
    if weighting == "none":
        return jnp.ones_like(t)
    alpha, sigma = path.alpha(t), path.sigma(t)
    # Coefficients (p, q) of out = p x0 + q eps for each prediction type (paths.target).
    if prediction == "eps":
        p, q = jnp.zeros_like(t), jnp.ones_like(t)
    elif prediction == "x0":
        p, q = jnp.ones_like(t), jnp.zeros_like(t)
    elif prediction == "v":
        p, q = -sigma, alpha
    elif prediction == "velocity":
        p, q = path.derivatives(t)
    else:
        raise ValueError(f"unknown prediction {prediction!r}")
    jacobian = p - q * alpha / sigma  # d out / d x0 at fixed x_t
    return x0_weight(path, weighting, t, gamma) / jnp.square(jacobian)


def diffusion_loss(
    apply_fn: ApplyFn,
    params: Any,
    x0: jax.Array,
    labels: jax.Array,
    rng: jax.Array,
    *,
    path: str,
    prediction: str,
    t_sampling: str = "uniform",
    weighting: str = "none",
    min_snr_gamma: float = 5.0,
    time_shift: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted mean squared error between ``apply_fn(params, x_t, 1000 t, labels)`` and the
    target.

    ``x0``: [B, ..., C] normalised latents; ``labels``: [B]. Output channels past C (a DiT's
    learned-variance half) are ignored. Pure and jittable (``path``, ``prediction``,
    ``t_sampling``, ``weighting`` static); ``time_shift`` moves the sampled times
    (``sample_t``). Returns (loss, {"t": [B] sampled times})."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {weighting!r}; known: {WEIGHTINGS}")
    p = Path(path)
    t_rng, eps_rng = jax.random.split(rng)
    t = sample_t(t_rng, x0.shape[0], t_sampling, shift=time_shift)  # [B]
    eps = jax.random.normal(eps_rng, x0.shape, x0.dtype)
    x_t = p.marginal(x0, eps, t)
    out = apply_fn(params, x_t, t * 1000.0, labels)[..., : x0.shape[-1]]
    err = jnp.square(out - target(p, prediction, x0, eps, t))
    if weighting != "none":
        err = _bcast(output_weight(p, prediction, weighting, t, min_snr_gamma), err) * err
    return jnp.mean(err), {"t": t}
