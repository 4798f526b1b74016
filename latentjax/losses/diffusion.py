"""Stage-2 objective: regress the network output onto the target of its prediction type.

Time is drawn uniformly or logit-normally (t = sigmoid(n), n ~ N(0, 1); Esser et al. 2024, eq. 19,
which puts more weight on the middle of the path), noise is standard normal, and the loss is the
mean squared error over all elements (DiT's "simple" loss, and flow matching's).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from latentjax.diffusion.paths import Path, target
from latentjax.diffusion.samplers import ApplyFn

T_SAMPLINGS = ("uniform", "logit_normal")

# Training times stay this far from the ends, where some targets have singular conversions.
T_EPS = 1e-5


def sample_t(
    rng: jax.Array, n: int, kind: str, t_min: float = T_EPS, t_max: float = 1.0 - T_EPS
) -> jax.Array:
    """[n] times in [t_min, t_max], drawn by ``kind`` ("uniform" or "logit_normal")."""
    if kind == "uniform":
        t = jax.random.uniform(rng, (n,))
    elif kind == "logit_normal":
        t = jax.nn.sigmoid(jax.random.normal(rng, (n,)))  # location 0, scale 1 (SD3's default)
    else:
        raise ValueError(f"unknown t_sampling {kind!r}; known: {T_SAMPLINGS}")
    return jnp.clip(t, t_min, t_max)


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
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean squared error between ``apply_fn(params, x_t, 1000 t, labels)`` and the target.

    ``x0``: [B, ..., C] normalised latents; ``labels``: [B]. Output channels past C (a DiT's
    learned-variance half) are ignored. Pure and jittable (``path``, ``prediction``,
    ``t_sampling`` static). Returns (loss, {"t": [B] sampled times})."""
    p = Path(path)
    t_rng, eps_rng = jax.random.split(rng)
    t = sample_t(t_rng, x0.shape[0], t_sampling)  # [B]
    eps = jax.random.normal(eps_rng, x0.shape, x0.dtype)
    x_t = p.marginal(x0, eps, t)
    out = apply_fn(params, x_t, t * 1000.0, labels)[..., : x0.shape[-1]]
    loss = jnp.mean(jnp.square(out - target(p, prediction, x0, eps, t)))
    return loss, {"t": t}
