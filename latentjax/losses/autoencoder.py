"""Stage-1 losses: reconstruction, KL with warm-up and free bits, the PatchGAN adversarial terms
(hinge and non-saturating), the adaptive weight, R1 / LeCam discriminator regularisers, and the
transform of equivariance regularisation (EQ-VAE).

Scale conventions follow latent-diffusion's ``LPIPSWithDiscriminator`` (Rombach et al. 2022):
the reconstruction term is summed over pixels and averaged over the batch, the KL is summed over
latent elements and averaged over the batch, so ``kl_weight=1`` is the ELBO of a Laplace (L1) or
Gaussian (L2) likelihood and Stable Diffusion's ``kl_weight=1e-6`` means what it means there.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def free_bits_kl(kl_elements: jax.Array, free_bits: float) -> jax.Array:
    """KL with "free bits" (Kingma et al. 2016, eq. 15): each latent channel's KL, averaged over
    the batch, is charged at least ``free_bits`` nats per latent element, so the optimiser gains
    nothing by pushing a channel's KL below that -- a guard against posterior collapse.

    ``kl_elements``: [B, h, w, z] per-element KL. Returns the batch-mean KL summed over the
    latent, as ``DiagonalGaussian.kl().mean()`` when ``free_bits`` is 0:
    h w sum_j max(mean_{b, positions} KL_bj, free_bits).
    """
    per_channel = kl_elements.reshape(-1, kl_elements.shape[-1]).mean(axis=0)  # [z]
    positions = kl_elements.shape[1] * kl_elements.shape[2]
    return positions * jnp.sum(jnp.maximum(per_channel, free_bits))


GAN_LOSSES = ("hinge", "non_saturating")


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    """Discriminator hinge loss (Lim & Ye 2017): mean relu(1 - D(x)) + mean relu(1 + D(G(z)))."""
    real = jnp.mean(jax.nn.relu(1.0 - logits_real))
    fake = jnp.mean(jax.nn.relu(1.0 + logits_fake))
    return 0.5 * (real + fake)


def hinge_g_loss(logits_fake: jax.Array) -> jax.Array:
    """Generator side of the hinge GAN: maximise D(G(z))."""
    return -jnp.mean(logits_fake)


def non_saturating_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    """The original GAN's discriminator loss (Goodfellow et al. 2014) on logits:
    -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))) = softplus(-D(x)) + softplus(D(G(z))),
    halved and averaged as taming's ``vanilla_d_loss``."""
    real = jnp.mean(jax.nn.softplus(-logits_real))
    fake = jnp.mean(jax.nn.softplus(logits_fake))
    return 0.5 * (real + fake)


def non_saturating_g_loss(logits_fake: jax.Array) -> jax.Array:
    """The non-saturating generator loss (Goodfellow et al. 2014, section 3):
    -log sigmoid(D(G(z))) = softplus(-D(G(z))), which keeps a useful gradient when the
    discriminator rejects the fakes confidently."""
    return jnp.mean(jax.nn.softplus(-logits_fake))


def d_loss(kind: str, logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    if kind == "hinge":
        return hinge_d_loss(logits_real, logits_fake)
    if kind == "non_saturating":
        return non_saturating_d_loss(logits_real, logits_fake)
    raise ValueError(f"unknown GAN loss {kind!r}; use one of {GAN_LOSSES}")


def g_loss(kind: str, logits_fake: jax.Array) -> jax.Array:
    if kind == "hinge":
        return hinge_g_loss(logits_fake)
    if kind == "non_saturating":
        return non_saturating_g_loss(logits_fake)
    raise ValueError(f"unknown GAN loss {kind!r}; use one of {GAN_LOSSES}")


def r1_penalty(disc_fn, x: jax.Array) -> jax.Array:
    """R1 (Mescheder et al. 2018, eq. 9 without the gamma/2): the squared norm of the gradient
    of the discriminator's output with respect to real images, averaged over the batch.

    ``disc_fn``: images [B, H, W, C] -> logits [B, ...]; a PatchGAN's logit map is summed per
    example, so the penalty is on the gradient of the example's total score. Multiply by
    gamma / 2 in the loss."""
    grads = jax.grad(lambda im: jnp.sum(disc_fn(im)))(x)
    return jnp.mean(jnp.sum(jnp.square(grads).reshape(x.shape[0], -1), axis=1))


def lecam_penalty(
    logits_real: jax.Array, logits_fake: jax.Array, ema_real: jax.Array, ema_fake: jax.Array
) -> jax.Array:
    """LeCam regulariser (Tseng et al. 2021, eq. 3):
    E ||D(x) - alpha_F||^2 + E ||D(G(z)) - alpha_R||^2, where alpha_R, alpha_F are exponential
    moving averages of the discriminator's mean output on real and on fake images (held
    constant here)."""
    ema_real, ema_fake = jax.lax.stop_gradient(ema_real), jax.lax.stop_gradient(ema_fake)
    return jnp.mean(jnp.square(logits_real - ema_fake)) + jnp.mean(
        jnp.square(logits_fake - ema_real)
    )


def adaptive_weight(
    grad_rec: jax.Array, grad_adv: jax.Array, max_weight: float = 1e4, eps: float = 1e-4
) -> jax.Array:
    """lambda = ||grad L_rec|| / (||grad L_adv|| + eps), clipped to [0, max_weight] and not
    differentiated (Esser et al. 2021, eq. 7). Both gradients are taken with respect to the
    decoder's last layer. This is taming/latent-diffusion's ``calculate_adaptive_weight``
    exactly: the norm ratio with eps 1e-4, clamped to [0, 1e4], detached; the caller multiplies
    by ``disc_weight``."""
    w = jnp.linalg.norm(grad_rec) / (jnp.linalg.norm(grad_adv) + eps)
    return jax.lax.stop_gradient(jnp.clip(w, 0.0, max_weight))


def equivariance_transform(x: jax.Array, scale: float, quarter_turns: jax.Array) -> jax.Array:
    """The transform tau of equivariance regularisation (EQ-VAE, Kouzelis et al. 2025, sec. 3;
    Skorokhodov et al. 2025): a bilinear down-scale of both sides by ``scale`` (antialiased, as
    any down-sampling of an image should be), then a rotation by ``quarter_turns`` x 90 degrees
    counter-clockwise in the (H, W) plane. Both are linear per channel and act on positions
    only, so they commute with any per-position channel map: applied alike to an image and to
    its latent. ``x``: [B, H, W, C] with H = W and H * scale whole; ``scale`` is static (it sets
    the output shape), ``quarter_turns`` may be traced (an int in 0..3)."""
    b, hgt, wid, c = x.shape
    if hgt != wid:
        raise ValueError(f"equivariance_transform needs square inputs, got {hgt}x{wid}")
    side = round(hgt * scale)
    if abs(side - hgt * scale) > 1e-6 or side < 1:
        raise ValueError(f"scale {scale} does not give a whole side from {hgt}")
    if side != hgt:
        x = jax.image.resize(x, (b, side, side, c), method="linear", antialias=True)
    turns = jnp.stack([jnp.rot90(x, k, axes=(1, 2)) for k in range(4)])  # [4, B, s, s, C]
    return turns[jnp.asarray(quarter_turns, jnp.int32) % 4]


def draw_quarter_turns(rng: jax.Array, allowed: Sequence[int]) -> jax.Array:
    """One rotation for the batch, uniform over ``allowed`` quarter turns (EQ-VAE draws one
    transform per batch)."""
    return jax.random.choice(rng, jnp.asarray(tuple(allowed), jnp.int32))


def equivariance_loss(
    encode, decode, x: jax.Array, scale: float, quarter_turns: jax.Array, kind: str = "l1"
) -> jax.Array:
    """EQ-VAE's reconstruction term (Kouzelis et al. 2025, eq. 5): the error of
    ``decode(tau(encode(x)))`` against ``tau(x)``, per example (:func:`reconstruction_loss`).
    Zero for every tau exactly when the autoencoder reconstructs and is equivariant to tau.
    The training step applies the same term with the configured perceptual and adversarial
    losses on top (``latentjax/train/autoencoder.py``)."""
    x_hat = decode(equivariance_transform(encode(x), scale, quarter_turns))
    return reconstruction_loss(equivariance_transform(x, scale, quarter_turns), x_hat, kind)
