"""Stage-1 losses: reconstruction, KL with warm-up, and the PatchGAN adversarial terms.

Scale conventions follow latent-diffusion's ``LPIPSWithDiscriminator`` (Rombach et al. 2022):
the reconstruction term is summed over pixels and averaged over the batch, the KL is summed over
latent elements and averaged over the batch, so ``kl_weight=1`` is the ELBO of a Laplace (L1) or
Gaussian (L2) likelihood and Stable Diffusion's ``kl_weight=1e-6`` means what it means there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def reconstruction_loss(x: jax.Array, x_hat: jax.Array, kind: str = "l1") -> jax.Array:
    """Per-example reconstruction error summed over pixels. ``x``, ``x_hat``: [B, H, W, C]."""
    diff = x_hat - x
    if kind == "l1":
        err = jnp.abs(diff)
    elif kind == "l2":
        err = jnp.square(diff)
    else:
        raise ValueError(f"unknown reconstruction loss {kind!r}; use 'l1' or 'l2'")
    return err.reshape(err.shape[0], -1).sum(axis=1)  # [B]


def linear_warmup(step: jax.Array, warmup_steps: int, start_step: int = 0) -> jax.Array:
    """0 before ``start_step``, then a linear ramp to 1 over ``warmup_steps`` (1 at once if 0).

    Used for the KL weight (KL annealing, Bowman et al. 2016) so the posterior is not pulled to
    the prior before the decoder has learnt to use the latents."""
    step = jnp.asarray(step, jnp.float32) - start_step
    if warmup_steps <= 0:
        return (step >= 0).astype(jnp.float32)
    return jnp.clip(step / warmup_steps, 0.0, 1.0)


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    """Discriminator hinge loss (Lim & Ye 2017): mean relu(1 - D(x)) + mean relu(1 + D(G(z)))."""
    real = jnp.mean(jax.nn.relu(1.0 - logits_real))
    fake = jnp.mean(jax.nn.relu(1.0 + logits_fake))
    return 0.5 * (real + fake)


def hinge_g_loss(logits_fake: jax.Array) -> jax.Array:
    """Generator side of the hinge GAN: maximise D(G(z))."""
    return -jnp.mean(logits_fake)


def adaptive_weight(
    grad_rec: jax.Array, grad_adv: jax.Array, max_weight: float = 1e4, eps: float = 1e-4
) -> jax.Array:
    """lambda = ||grad L_rec|| / (||grad L_adv|| + eps), clipped to [0, max_weight] and not
    differentiated (Esser et al. 2021, eq. 7; latent-diffusion clips at 1e4). Both gradients are
    taken with respect to the decoder's last layer."""
    w = jnp.linalg.norm(grad_rec) / (jnp.linalg.norm(grad_adv) + eps)
    return jax.lax.stop_gradient(jnp.clip(w, 0.0, max_weight))
