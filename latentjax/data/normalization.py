"""Latent normalisation: the map ``(z - shift) * scale`` between the frozen encoder's latents and
the space stage 2 models, and the per-batch moments its shift and scale are measured from
(``latentjax.data.latents.latent_stats`` turns those into the statistics).

Stable Diffusion's ``scaling_factor`` is ``scale`` (1 / std of its latents; Rombach et al. 2022,
sec. 4.3.2) and SD3/Flux's ``shift_factor`` is ``shift``. Every function works on numpy and on
jax arrays alike, so the trainer (jitted), the latent cache (numpy), generation and the Python
API share one formula.
"""

from __future__ import annotations

from typing import Any


def normalize(z: Any, shift: Any, scale: Any) -> Any:
    """Encoder latents -> the normalised latents stage 2 models: ``(z - shift) * scale``.
    ``shift``, ``scale``: scalars (or per-channel [C])."""
    return (z - shift) * scale


def denormalize(z: Any, shift: Any, scale: Any) -> Any:
    """The inverse of :func:`normalize`, ``z / scale + shift``: what the decoder takes."""
    return z / scale + shift


def latent_moments(z: Any, posterior_mean: Any) -> tuple[Any, Any, Any]:
    """One batch's moments per channel [C]: ``(E[z], E[z^2], Var[posterior mean])`` over all
    axes but the last, of posterior samples ``z`` and the posterior means (both [B, ..., C])."""
    axes = tuple(range(z.ndim - 1))
    return z.mean(axes), (z * z).mean(axes), posterior_mean.var(axes)
