"""A deterministic sampler compiled as one program: DDIM on a Gaussian path.

Each step turns the network output at time t into (x0_hat, eps_hat) and moves to the next time s
along the same path: x_s = alpha(s) x0_hat + sigma(s) eps_hat (DDIM with eta = 0, Song et al.
2021, eq. 12). On the ``linear`` path with ``velocity`` prediction this is exactly an Euler step of
the probability-flow ODE dx/dt = v: with v_hat = eps_hat - x0_hat and x_t = (1 - t) x0_hat +
t eps_hat, (1 - s) x0_hat + s eps_hat = x_t + (s - t) v_hat.

The time loop is a ``lax.fori_loop``, so the network is traced once and the whole trajectory is
one XLA program whatever the number of steps. Classifier-free guidance (Ho & Salimans 2022) runs
the conditional and unconditional inputs as one doubled batch and mixes the outputs in the
network's output space: out = uncond + cfg_scale * (cond - uncond).

``sample`` takes Python values for ``path``, ``prediction``, ``num_steps``, ``cfg_scale``,
``null_label``, ``t_max`` and ``t_min``: jit the caller (as ``generate.py`` does), or use
:func:`make_sampler`, which returns ``sample`` jitted with those arguments static.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from latentjax.diffusion.paths import Path, to_x0_eps, valid_t_range

# apply_fn(params, x_t [B, ...], t [B] in [0, 1000], labels [B]) -> output [B, ..., C or 2C]
ApplyFn = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]

SAMPLE_STATIC_ARGNAMES = (
    "apply_fn",
    "path",
    "prediction",
    "num_steps",
    "cfg_scale",
    "null_label",
    "t_max",
    "t_min",
)


def guided_output(
    apply_fn: ApplyFn,
    params: Any,
    x: jax.Array,
    t: jax.Array,
    labels: jax.Array,
    cfg_scale: float = 1.0,
    null_label: int | None = None,
) -> jax.Array:
    """The (guided) network output at (x [B, ...], t [B] in [0, 1]) for ``labels`` [B].

    Channels past x's (a DiT's learned-variance half) are dropped. With ``cfg_scale == 1`` or no
    ``null_label`` the model runs once on the plain batch; otherwise once on [x, x] with labels
    [labels, null] (one call of twice the batch, not two calls)."""
    channels = x.shape[-1]
    if cfg_scale == 1.0 or null_label is None:
        return apply_fn(params, x, t * 1000.0, labels)[..., :channels]
    both = apply_fn(
        params,
        jnp.concatenate([x, x]),  # [2B, ...]
        jnp.concatenate([t, t]) * 1000.0,
        jnp.concatenate([labels, jnp.full_like(labels, null_label)]),
    )[..., :channels]
    cond, uncond = jnp.split(both, 2)
    return uncond + cfg_scale * (cond - uncond)


def default_t_max(prediction: str) -> float:
    """1, except for ``eps`` prediction, which cannot recover x0 at t = 1 (alpha = 0)."""
    return valid_t_range(prediction)[1]


def sample(
    apply_fn: ApplyFn,
    params: Any,
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
    """x0 samples [B, ...] from ``noise`` [B, ...] (standard normal) and ``labels`` [B].

    Integrates on the uniform grid t_max = t_0 > t_1 > ... > t_N = t_min (N = ``num_steps``
    network calls). ``t_max=None`` means :func:`default_t_max` (1, or 1 - 1e-3 for ``eps``).
    The result is always an x0 estimate: at t_min = 0 the last DDIM step lands on
    x0_hat (alpha(0) = 1, sigma(0) = 0); for t_min > 0 one more network call at t_min returns its
    x0_hat (the final denoising step), so N + 1 calls in all."""
    p = Path(path)
    if t_max is None:
        t_max = default_t_max(prediction)
    # The network is evaluated only at t > t_min (plus x0_hat alone at t_min > 0), so only the
    # upper end of valid_t_range matters: eps_hat of x0 prediction at t = 0 is never used.
    hi = valid_t_range(prediction)[1]
    if not 0.0 <= t_min < t_max <= hi:
        raise ValueError(
            f"need 0 <= t_min < t_max <= {hi} for {prediction!r} prediction, "
            f"got t_min={t_min}, t_max={t_max}"
        )
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    times = jnp.linspace(t_max, t_min, num_steps + 1, dtype=noise.dtype)  # [N + 1]
    batch = noise.shape[0]

    def denoise(x, t):
        t_vec = jnp.full((batch,), t, noise.dtype)
        out = guided_output(apply_fn, params, x, t_vec, labels, cfg_scale, null_label)
        return to_x0_eps(p, prediction, out, x, t_vec)

    def step(i, x):
        t, s = times[i], times[i + 1]
        x0_hat, eps_hat = denoise(x, t)
        # At s = 0, sigma(s) = 0 and eps_hat may be inf/nan (x0 prediction): drop it there.
        sigma_s = p.sigma(s)
        return p.alpha(s) * x0_hat + jnp.where(sigma_s > 0, sigma_s * eps_hat, 0.0)

    x = jax.lax.fori_loop(0, num_steps, step, noise)
    if t_min > 0:
        x, _ = denoise(x, times[-1])
    return x


def make_sampler(
    apply_fn: ApplyFn,
    *,
    path: str,
    prediction: str,
    num_steps: int,
    cfg_scale: float = 1.0,
    null_label: int | None = None,
    t_max: float | None = None,
    t_min: float = 0.0,
) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """``sample`` with everything static bound and jitted: ``fn(params, noise, labels) -> x0``."""
    fn = functools.partial(
        sample,
        apply_fn,
        path=path,
        prediction=prediction,
        num_steps=num_steps,
        cfg_scale=cfg_scale,
        null_label=null_label,
        t_max=t_max,
        t_min=t_min,
    )
    return jax.jit(fn)
