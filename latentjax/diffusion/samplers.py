"""Samplers for Gaussian paths, each compiled as one program, selected by name.

Every sampler integrates from t_max (noise) down to t_min on the uniform grid
t_i = t_max + (t_min - t_max) i / N, i = 0..N, computed *inside* the program from a traced
``num_steps`` N: the time loop is a ``lax.fori_loop`` with a dynamic bound, so the network is
traced once and changing N does not recompile. With a time shift other than 1
(``paths.shift_time``, SD3's) the grid is uniform in the unshifted time instead:
t_i = shift_time(u_max + (u_min - u_max) i / N) with u = unshift_time(t), so the ends stay at
t_max and t_min and a shift above 1 crowds the steps towards the noise end. Each step turns the
network output at t into (x0_hat, eps_hat) (``paths.to_x0_eps``) and moves to s = t_{i+1}:

- ``ddim``: x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z, with
  c^2 = eta^2 sigma_s^2 sigma_{t|s}^2 / sigma_t^2 and sigma_{t|s}^2 = sigma_t^2 - (alpha_t /
  alpha_s)^2 sigma_s^2 (Song et al. 2021, eq. 12 and 16, written for any Gaussian path). eta = 0
  is deterministic; on ``linear`` with ``velocity`` it is exactly Euler on the flow ODE.
- ``ddpm``: ancestral sampling from the forward process posterior q(x_s | x_t, x0_hat): mean
  (alpha_{t|s} sigma_s^2 / sigma_t^2) x_t + (alpha_s sigma_{t|s}^2 / sigma_t^2) x0_hat, variance
  sigma_{t|s}^2 sigma_s^2 / sigma_t^2 (Ho et al. 2020, eq. 6-7; Kingma et al. 2021, eq. 33). It
  equals ``ddim`` with eta = 1; the tests check the two formulas against each other.
- ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in lambda = log(alpha / sigma):
  x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) D, h = lambda_s - lambda_t, with
  D = (1 + 1/(2r)) x0_hat_t - 1/(2r) x0_hat_prev, r = h_prev / h; first-order (D = x0_hat) where
  h or h_prev is infinite (a step from alpha = 0 or into sigma = 0), as Lu et al. do for the last
  step ("lower order final").
- ``euler``: Euler on the probability-flow ODE dx/dt = v_hat = alpha' x0_hat + sigma' eps_hat.
- ``heun``: Heun's second-order method on the same ODE; the corrector is skipped on a step that
  ends at t = 0 (Karras et al. 2022, Alg. 1), so N steps cost 2N - 1 calls when t_min = 0.
- ``euler_maruyama``: Euler–Maruyama on the reverse-time SDE with the path's marginals,
  dx = [-v + g^2/2 grad log p] d tau + g dW in tau = 1 - t (Song et al. 2021b, eq. 6; for flows
  Ma et al. 2024, SiT, sec. 2.3: any g gives the same marginals). We take g(t)^2 = 2 sigma(t),
  so g^2/2 grad log p = -eps_hat and the drift is -(v_hat + eps_hat), finite on all of [0, 1].
  No noise is added on a step that ends at t = 0.

For t_min > 0 one more network call at t_min returns its x0_hat (the final denoising step).

Classifier-free guidance (Ho & Salimans 2022) runs the conditional and unconditional inputs as one
doubled batch and mixes them in the network's output space: out = uncond + w (cond - uncond),
applied only for t inside ``guidance_interval`` (Kynkäänniemi et al. 2024 guide only on an
interval of noise levels; here it is an interval of path time). ``guidance_channels`` k > 0
guides only the first k channels and keeps the conditional output in the others: DiT's released
``forward_with_cfg`` (facebookresearch/DiT, models.py) guides 3 of the 4 latent channels, a
leftover of GLIDE's RGB code kept "for exact reproducibility"; its published samples and FIDs
were made that way. The default, 0, guides every channel.

Randomness: stochastic samplers take per-example keys ``keys`` [B] and draw step i's noise for
example b from ``fold_in(keys[b], i)``, so a sample does not depend on batch size, chunking or
the number of devices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from latentjax.diffusion.paths import (
    Path,
    _bcast,
    shift_time,
    to_x0_eps,
    unshift_time,
    valid_t_range,
)
from latentjax.errors import LatentjaxError

# apply_fn(params, x_t [B, ...], t [B] in [0, 1000], labels [B]) -> output [B, ..., C or 2C]
ApplyFn = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]

SAMPLERS = ("ddim", "ddpm", "dpmpp_2m", "euler", "heun", "euler_maruyama")
STOCHASTIC = ("ddpm", "euler_maruyama")  # ddim too when eta > 0

# Arguments of ``sample`` that must be static under jit (``num_steps``, ``cfg_scale``, ``eta``,
# ``guidance_interval`` and ``time_shift`` may be traced).
SAMPLE_STATIC_ARGNAMES = (
    "apply_fn",
    "path",
    "prediction",
    "sampler",
    "null_label",
    "guided",
    "guidance_channels",
    "t_max",
    "t_min",
)


class SamplerError(LatentjaxError):
    """An unknown sampler or an invalid sampler argument."""


def check_sampler(sampler: str, num_steps: int | None = None, eta: float | None = None) -> None:
    """One-line errors for a bad sampler name, step count or eta (call before tracing)."""
    if sampler not in SAMPLERS:
        raise SamplerError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    if num_steps is not None and (isinstance(num_steps, bool) or int(num_steps) < 1):
        raise SamplerError(f"--steps must be a positive integer, got {num_steps}")
    if eta is not None and not 0.0 <= float(eta) <= 1.0:
        raise SamplerError(f"eta must be in [0, 1], got {eta}")


def guided_output(
    apply_fn: ApplyFn,
    params: Any,
    x: jax.Array,
    t: jax.Array,
    labels: jax.Array,
    cfg_scale: float | jax.Array = 1.0,
    null_label: int | None = None,
    guidance_interval: tuple[float, float] | None = None,
    guided: bool | None = None,
    guidance_channels: int = 0,
) -> jax.Array:
    """The (guided) network output at (x [B, ...], t [B] in [0, 1]) for ``labels`` [B].

    Channels past x's (a DiT's learned-variance half) are dropped. ``guided`` (static) says
    whether to run the doubled batch; by default it is ``null_label is not None and
    cfg_scale != 1`` (``cfg_scale`` must then be a Python number). Unguided, the model runs once
    on the plain batch; guided, once on [x, x] with labels [labels, null] (one call of twice the
    batch, not two calls). Outside ``guidance_interval`` (lo <= t <= hi) the conditional output
    is returned; ``guidance_channels`` k > 0 (static) guides channels [0, k) only, the others
    being the conditional output (DiT's sampler; module docstring)."""
    channels = x.shape[-1]
    if guided is None:
        guided = null_label is not None and cfg_scale != 1.0
    if not guided:
        return apply_fn(params, x, t * 1000.0, labels)[..., :channels]
    if null_label is None:
        raise ValueError("guidance needs a null_label")
    both = apply_fn(
        params,
        jnp.concatenate([x, x]),  # [2B, ...]
        jnp.concatenate([t, t]) * 1000.0,
        jnp.concatenate([labels, jnp.full_like(labels, null_label)]),
    )[..., :channels]
    cond, uncond = jnp.split(both, 2)
    out = uncond + cfg_scale * (cond - uncond)
    if 0 < guidance_channels < channels:
        out = jnp.concatenate([out[..., :guidance_channels], cond[..., guidance_channels:]], -1)
    if guidance_interval is not None:
        lo, hi = guidance_interval
        inside = (t >= lo) & (t <= hi)  # [B]
        out = jnp.where(_bcast(inside, out), out, cond)
    return out


def default_t_max(prediction: str) -> float:
    """1, except for ``eps`` prediction, which cannot recover x0 at t = 1 (alpha = 0)."""
    return valid_t_range(prediction)[1]


def _normal(keys: jax.Array, i: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """[B, *shape] standard normal; example b's from fold_in(keys[b], i)."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), shape, dtype))(keys)


def sample(
    apply_fn: ApplyFn,
    params: Any,
    noise: jax.Array,
    labels: jax.Array,
    *,
    path: str,
    prediction: str,
    num_steps: int | jax.Array,
    sampler: str = "ddim",
    keys: jax.Array | None = None,
    eta: float | jax.Array = 0.0,
    cfg_scale: float | jax.Array = 1.0,
    null_label: int | None = None,
    guided: bool | None = None,
    guidance_interval: tuple[float, float] | jax.Array | None = None,
    guidance_channels: int = 0,
    t_max: float | None = None,
    t_min: float = 0.0,
    time_shift: float | jax.Array = 1.0,
) -> jax.Array:
    """x0 samples [B, ...] from ``noise`` [B, ...] (standard normal) and ``labels`` [B].

    ``num_steps`` N network steps on the grid from ``t_max`` to ``t_min``, uniform in the time
    unshifted by ``time_shift`` (module docstring); it, ``eta``, ``cfg_scale``,
    ``guidance_interval`` and ``time_shift`` may be traced values.
    ``t_max=None`` means :func:`default_t_max` (1, or 1 - 1e-3 for ``eps``). ``keys`` (typed
    PRNG keys [B]) are needed by ``ddpm``, ``euler_maruyama`` and ``ddim`` with eta > 0."""
    check_sampler(sampler)
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
    if isinstance(num_steps, int) and num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    stochastic = sampler in STOCHASTIC or (sampler == "ddim" and not _is_zero(eta))
    if stochastic and keys is None:
        raise ValueError(f"sampler {sampler!r} (eta={eta}) needs per-example keys")
    dtype = noise.dtype
    batch = noise.shape[0]
    n = jnp.asarray(num_steps, jnp.int32)
    if guided is None:
        guided = null_label is not None and (
            not isinstance(cfg_scale, float | int) or cfg_scale != 1
        )

    shift = jnp.asarray(time_shift, dtype)
    u_max, u_min = unshift_time(t_max, shift), unshift_time(t_min, shift)

    def time(i):
        u = u_max + (u_min - u_max) * i.astype(dtype) / n.astype(dtype)
        return shift_time(u, shift).astype(dtype)

    def denoise(x, t):
        t_vec = jnp.full((batch,), t, dtype)
        out = guided_output(
            apply_fn,
            params,
            x,
            t_vec,
            labels,
            cfg_scale,
            null_label,
            guidance_interval,
            guided,
            guidance_channels,
        )
        x0_hat, eps_hat = to_x0_eps(p, prediction, out, x, t_vec)
        # At t = 0 (only reached by Heun's corrector with t_min = 0) eps_hat may be inf/nan.
        return x0_hat, jnp.where(t > 0, eps_hat, 0.0)

    def velocity(x0_hat, eps_hat, t):
        d_alpha, d_sigma = p.derivatives(t)
        return d_alpha * x0_hat + d_sigma * eps_hat

    def noise_at(i):
        return _normal(keys, i, noise.shape[1:], dtype)

    # Each step: (i, carry) -> carry, with carry = (x, extra); t = time(i), s = time(i + 1).
    def ddim_step(i, carry):
        x, _ = carry
        t, s = time(i), time(i + 1)
        x0_hat, eps_hat = denoise(x, t)
        a_t, s_t, a_s, s_s = p.alpha(t), p.sigma(t), p.alpha(s), p.sigma(s)
        var_ts = s_t**2 - (a_t / a_s) ** 2 * s_s**2  # sigma_{t|s}^2
        c2 = (eta**2) * s_s**2 * var_ts / s_t**2 if stochastic else 0.0
        # At s = 0, sigma_s = 0 and eps_hat may be inf/nan (x0 prediction): drop it there.
        det = jnp.where(s_s > 0, jnp.sqrt(jnp.maximum(s_s**2 - c2, 0.0)) * eps_hat, 0.0)
        x = a_s * x0_hat + det
        if stochastic:
            x = x + jnp.sqrt(jnp.maximum(c2, 0.0)) * noise_at(i)
        return x, carry[1]

    def ddpm_step(i, carry):
        x, _ = carry
        t, s = time(i), time(i + 1)
        x0_hat, _ = denoise(x, t)
        a_t, s_t, a_s, s_s = p.alpha(t), p.sigma(t), p.alpha(s), p.sigma(s)
        a_ts = a_t / a_s
        var_ts = s_t**2 - a_ts**2 * s_s**2
        mean = (a_ts * s_s**2 / s_t**2) * x + (a_s * var_ts / s_t**2) * x0_hat
        std = jnp.sqrt(jnp.maximum(var_ts * s_s**2 / s_t**2, 0.0))
        return mean + std * noise_at(i), carry[1]

    def dpmpp_2m_step(i, carry):
        x, (x0_prev, h_prev) = carry
        t, s = time(i), time(i + 1)
        x0_hat, _ = denoise(x, t)
        a_t, s_t, a_s, s_s = p.alpha(t), p.sigma(t), p.alpha(s), p.sigma(s)
        lam_t = jnp.log(a_t) - jnp.log(s_t)
        lam_s = jnp.log(a_s) - jnp.log(s_s)
        h = lam_s - lam_t
        second = (i > 0) & jnp.isfinite(h) & jnp.isfinite(h_prev)
        r = jnp.where(second, h_prev / h, 1.0)
        d = jnp.where(second, (1 + 0.5 / r) * x0_hat - (0.5 / r) * x0_prev, x0_hat)
        # exp(-h) = (alpha_t sigma_s) / (sigma_t alpha_s), finite even where h is infinite.
        x = (s_s / s_t) * x - a_s * ((a_t * s_s) / (s_t * a_s) - 1.0) * d
        return x, (x0_hat, h)

    def euler_step(i, carry):
        x, _ = carry
        t, s = time(i), time(i + 1)
        x0_hat, eps_hat = denoise(x, t)
        return x + (s - t) * velocity(x0_hat, eps_hat, t), carry[1]

    def heun_step(i, carry):
        x, _ = carry
        t, s = time(i), time(i + 1)
        v_t = velocity(*denoise(x, t), t)
        x_euler = x + (s - t) * v_t

        def correct(_):
            v_s = velocity(*denoise(x_euler, s), s)
            return x + (s - t) * 0.5 * (v_t + v_s)

        return jax.lax.cond(s > 0, correct, lambda _: x_euler, None), carry[1]

    def em_step(i, carry):
        x, _ = carry
        t, s = time(i), time(i + 1)
        x0_hat, eps_hat = denoise(x, t)
        dtau = t - s
        drift = -(velocity(x0_hat, eps_hat, t) + eps_hat)
        x = x + dtau * drift
        g = jnp.sqrt(2.0 * p.sigma(t) * dtau)
        return x + jnp.where(s > 0, g, 0.0) * noise_at(i), carry[1]

    step = {
        "ddim": ddim_step,
        "ddpm": ddpm_step,
        "dpmpp_2m": dpmpp_2m_step,
        "euler": euler_step,
        "heun": heun_step,
        "euler_maruyama": em_step,
    }[sampler]
    extra = (jnp.zeros_like(noise), jnp.asarray(jnp.inf, dtype))
    x, _ = jax.lax.fori_loop(0, n, step, (noise, extra))
    if t_min > 0:
        x, _ = denoise(x, time(n))
    return x


def _is_zero(v) -> bool:
    return isinstance(v, float | int) and v == 0


def make_sampler(
    apply_fn: ApplyFn,
    *,
    path: str,
    prediction: str,
    num_steps: int,
    sampler: str = "ddim",
    eta: float = 0.0,
    cfg_scale: float = 1.0,
    null_label: int | None = None,
    guidance_interval: tuple[float, float] | None = None,
    guidance_channels: int = 0,
    t_max: float | None = None,
    t_min: float = 0.0,
    time_shift: float = 1.0,
) -> Callable[..., jax.Array]:
    """``sample`` with everything bound and jitted: ``fn(params, noise, labels, keys=None)``."""
    fn = functools.partial(
        sample,
        apply_fn,
        path=path,
        prediction=prediction,
        num_steps=num_steps,
        sampler=sampler,
        eta=eta,
        cfg_scale=cfg_scale,
        null_label=null_label,
        guidance_interval=guidance_interval,
        guidance_channels=guidance_channels,
        t_max=t_max,
        t_min=t_min,
        time_shift=time_shift,
    )
    return jax.jit(lambda params, noise, labels, keys=None: fn(params, noise, labels, keys=keys))


def make_runtime_sampler(
    apply_fn: ApplyFn,
    *,
    path: str,
    prediction: str,
    sampler: str,
    null_label: int | None = None,
    guided: bool = False,
    guidance_channels: int = 0,
    t_max: float | None = None,
    t_min: float = 0.0,
) -> Callable[..., jax.Array]:
    """One jitted program for every step count, eta, guidance scale, interval and time shift:
    ``fn(params, noise, labels, keys, num_steps, eta, cfg_scale, interval, time_shift=1) -> x0``
    (``interval``: float [2]; ``keys`` may be None for deterministic samplers, and DDIM then
    ignores ``eta``). Compiles once per input shape."""
    check_sampler(sampler)

    def fn(params, noise, labels, keys, num_steps, eta, cfg_scale, interval, time_shift=1.0):
        return sample(
            apply_fn,
            params,
            noise,
            labels,
            path=path,
            prediction=prediction,
            num_steps=num_steps,
            sampler=sampler,
            keys=keys,
            # Without keys, DDIM is the deterministic eta = 0 sampler.
            eta=eta if sampler == "ddim" and keys is not None else 0.0,
            cfg_scale=cfg_scale,
            null_label=null_label,
            guided=guided,
            guidance_interval=(interval[0], interval[1]) if guided else None,
            guidance_channels=guidance_channels,
            t_max=t_max,
            t_min=t_min,
            time_shift=time_shift,
        )

    return jax.jit(fn)
