"""A deterministic sampler compiled as one program: DDIM on a Gaussian path.

Each step turns the network output at time t into (x0_hat, eps_hat) and moves to the next time s
along the same path: x_s = alpha(s) x0_hat + sigma(s) eps_hat (DDIM with eta = 0, Song et al.
2021). On the ``linear`` path with ``velocity`` prediction this is exactly an Euler step of the
probability-flow ODE dx/dt = v: alpha(s) x0_hat + sigma(s) eps_hat = x_t + (s - t) v_hat.

The loop is a ``lax.fori_loop``, so the whole trajectory is one jitted program whatever the
number of steps. Classifier-free guidance (Ho & Salimans 2022) runs the conditional and
unconditional inputs as one doubled batch and mixes the outputs:
out = uncond + cfg_scale * (cond - uncond).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from latentjax.diffusion.paths import Path, to_x0_eps

# apply_fn(params, x_t [B, ...], t [B] in [0, 1000), labels [B]) -> output [B, ...]
ApplyFn = Callable[[object, jax.Array, jax.Array, jax.Array], jax.Array]

# eps prediction cannot recover x0 at t = 1 (alpha = 0): such models start here instead.
EPS_T_MAX = 0.999


def guided_output(
    apply_fn: ApplyFn,
    params,
    x: jax.Array,
    t: jax.Array,
    labels: jax.Array,
    cfg_scale: float,
    null_label: int | None,
) -> jax.Array:
    """The (guided) network output at (x, t) for ``labels``; learned-variance channels dropped."""
    channels = x.shape[-1]
    if cfg_scale == 1.0 or null_label is None:
        return apply_fn(params, x, t * 1000.0, labels)[..., :channels]
    both = apply_fn(
        params,
        jnp.concatenate([x, x]),
        jnp.concatenate([t, t]) * 1000.0,
        jnp.concatenate([labels, jnp.full_like(labels, null_label)]),
    )[..., :channels]
    cond, uncond = jnp.split(both, 2)
    return uncond + cfg_scale * (cond - uncond)


def sample(
    apply_fn: ApplyFn,
    params,
    noise: jax.Array,
    labels: jax.Array,
    *,
    path: str,
    prediction: str,
    num_steps: int,
    cfg_scale: float = 1.0,
    null_label: int | None = None,
    t_max: float | None = None,
    t_min: float = 0.0,
) -> jax.Array:
    """Integrates from ``noise`` at ``t_max`` to ``t_min`` in ``num_steps`` uniform steps and
    returns x at ``t_min`` (= x0_hat at 0). ``num_steps``, ``path``, ``prediction`` and
    ``cfg_scale`` are Python values fixed at trace time: jit the caller."""
    p = Path(path)
    if t_max is None:
        t_max = EPS_T_MAX if prediction == "eps" else 1.0
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    times = jnp.linspace(t_max, t_min, num_steps + 1)
    batch = noise.shape[0]

    def step(i, x):
        t, s = times[i], times[i + 1]
        t_vec = jnp.full((batch,), t, noise.dtype)
        out = guided_output(apply_fn, params, x, t_vec, labels, cfg_scale, null_label)
        x0_hat, eps_hat = to_x0_eps(p, prediction, out, x, t_vec)
        alpha_s, sigma_s = p.alpha_sigma(s)
        # At s = 0, sigma_s = 0: drop eps_hat, which an x0-predicting model makes 0 * inf there.
        return alpha_s * x0_hat + jnp.where(sigma_s > 0, sigma_s * eps_hat, 0.0)

    return jax.lax.fori_loop(0, num_steps, step, noise)
