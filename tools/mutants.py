"""The planted bugs of ``tools/mutate.py``: realistic mistakes in the core modules, each an exact
source replacement with the fast test files that should catch it.

A mutant's ``original`` must occur exactly once in ``file`` (``mutate.py`` checks, so an edit to
the code that moves a snippet makes the list fail loudly rather than test nothing). A mutant
that no test can tell from the original (the same behaviour) says why in ``equivalent``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    original: str
    mutated: str
    tests: tuple[str, ...]
    description: str
    equivalent: str = ""


# Test files, fastest first within each tuple (pytest -x stops at the first failure).
AE_LOSSES = "tests/test_ae_losses.py"
AE_STEP = "tests/test_wiring_autoencoder.py"
BOTTLENECK = "tests/test_bottleneck.py"
DIT_STEP = "tests/test_wiring_dit.py"
WEIGHTING = "tests/test_loss_weighting.py"
DIFFUSION = "tests/test_diffusion.py"
SAMPLERS = "tests/test_samplers.py"
GENERATE = "tests/test_wiring_generate.py"
PIPELINE = "tests/test_pipeline.py"
STATS = "tests/test_latent_stats.py"
CONVERT_AE = "tests/test_convert_ae.py"
CONVERT_DIT = "tests/test_convert_dit.py"
METRICS = "tests/test_metrics.py"
PERCEPTUAL = AE_LOSSES
# The Gaussian posterior's own tests (test_autoencoder.py is slow as a whole).
POSTERIOR = (
    "tests/test_autoencoder.py::test_sample_is_reparameterised",
    "tests/test_autoencoder.py::test_kl_matches_monte_carlo",
)

TRAIN_AE = "latentjax/train/autoencoder.py"
TRAIN_DIT = "latentjax/train/dit.py"
AE_LOSS_FILE = "latentjax/losses/autoencoder.py"
BOTTLENECK_FILE = "latentjax/models/bottleneck.py"
DIFF_LOSS = "latentjax/losses/diffusion.py"
PATHS = "latentjax/diffusion/paths.py"
SAMPLERS_FILE = "latentjax/diffusion/samplers.py"
GENERATE_FILE = "latentjax/generate.py"
PIPELINE_FILE = "latentjax/pipeline.py"
LATENTS = "latentjax/data/latents.py"
NORMALIZATION = "latentjax/data/normalization.py"


def m(id, file, original, mutated, tests, description, equivalent=""):
    return Mutant(id, file, original, mutated, tuple(tests), description, equivalent)


MUTANTS = [
    # --- stage 1: the step's combination of losses (train/autoencoder.py) -------------------
    m(
        "kl-warmup-ignored",
        TRAIN_AE,
        "kl_scale = lc.kl_weight * losses.linear_warmup(step, lc.kl_warmup_steps)",
        "kl_scale = lc.kl_weight",
        [AE_STEP],
        "The stage-1 step ignores the KL warm-up.",
    ),
    m(
        "kl-warmup-only-logged",
        TRAIN_AE,
        "return kl_scale * kl, {**metrics",
        "return lc.kl_weight * kl, {**metrics",
        [AE_STEP],
        "The warm-up is computed and logged but the full KL weight is applied.",
    ),
    m(
        "kl-free-bits-dropped",
        TRAIN_AE,
        "kl = losses.free_bits_kl(posterior.kl_elements(), lc.kl_free_bits)",
        "kl = terms['kl']",
        [AE_STEP],
        "Free bits are configured but the plain KL is charged.",
    ),
    m(
        "adaptive-weight-on-nll",
        TRAIN_AE,
        "grads = jax.tree.map(lambda a, b: a + weight * b, g_nll, g_adv)",
        "grads = jax.tree.map(lambda a, b: weight * a + b, g_nll, g_adv)",
        [AE_STEP],
        "The adaptive weight multiplies the reconstruction gradient, not the adversarial one.",
    ),
    m(
        "adaptive-weight-inverted",
        TRAIN_AE,
        "losses.adaptive_weight(_last_layer(g_nll), _last_layer(g_adv))",
        "losses.adaptive_weight(_last_layer(g_adv), _last_layer(g_nll))",
        [AE_STEP],
        "The adaptive weight's norms are swapped (||g_adv|| / ||g_nll||).",
    ),
    m(
        "adaptive-weight-wrong-layer",
        TRAIN_AE,
        'return tree["params"]["decoder"]["conv_out"]["kernel"]',
        'return tree["params"]["decoder"]["conv_in"]["kernel"]',
        [AE_STEP],
        "The adaptive weight compares gradients at the decoder's first layer, not its last.",
    ),
    m(
        "disc-weight-dropped",
        TRAIN_AE,
        "weight = lc.disc_weight * losses.adaptive_weight(",
        "weight = losses.adaptive_weight(",
        [AE_STEP],
        "disc_weight is not applied to the adaptive weight.",
    ),
    m(
        "vq-weights-swapped",
        TRAIN_AE,
        'reg = terms["codebook"] + lc.commitment_weight * terms["commitment"]',
        'reg = lc.commitment_weight * terms["codebook"] + terms["commitment"]',
        [AE_STEP],
        "Codebook and commitment weights swapped (beta on the codebook term).",
    ),
    m(
        "vq-codebook-weight-dropped",
        TRAIN_AE,
        "return lc.codebook_weight * reg, metrics",
        "return reg, metrics",
        [AE_STEP],
        "codebook_weight is not applied to the VQ regulariser.",
    ),
    m(
        "perceptual-weight-dropped",
        TRAIN_AE,
        "rec = rec + lc.perceptual_weight * term",
        "rec = rec + term",
        [AE_STEP],
        "perceptual_weight is not applied to the perceptual term.",
    ),
    m(
        "r1-weight-not-halved",
        TRAIN_AE,
        'loss = loss + 0.5 * r1_weight * extras["r1"]',
        'loss = loss + r1_weight * extras["r1"]',
        [AE_STEP],
        "R1 weighted by gamma instead of gamma / 2 (Mescheder et al. 2018, eq. 9).",
    ),
    m(
        "lecam-ema-swapped",
        TRAIN_AE,
        "k: decay * ema[k] + (1.0 - decay) * jax.lax.stop_gradient(means[k]) for k in ema",
        "k: (1.0 - decay) * ema[k] + decay * jax.lax.stop_gradient(means[k]) for k in ema",
        [AE_STEP],
        "The LeCam logit averages take decay on the new value instead of the old.",
    ),
    m(
        "disc-fake-not-detached",
        TRAIN_AE,
        'x, fake = batch["image"], jax.lax.stop_gradient(aux["x_hat"])',
        'x, fake = batch["image"], aux["x_hat"]',
        [AE_STEP],
        "The discriminator's fake images are not detached from the generator.",
        equivalent="Equivalent here: `aux` is an output of the finished `jax.vjp`, a plain array "
        "with no link to the autoencoder's parameters, and `disc_loss` is differentiated with "
        "respect to the discriminator's parameters only, so no gradient can reach the "
        "generator either way (the stop-gradient documents intent).",
    ),
    m(
        "disc-updated-before-start",
        TRAIN_AE,
        """            grads,
            state["params"]["disc"],
            state["opt_state"]["disc"],""",
        """            grads,
            jax.tree.map(lambda p: p * 0.5, state["params"]["disc"]),
            state["opt_state"]["disc"],""",
        [AE_STEP],
        "The reconstruction phase changes the discriminator's weights.",
    ),
    m(
        "ae-update-not-applied",
        TRAIN_AE,
        "ae = optax.apply_updates(ae_params, updates)",
        "ae = optax.apply_updates(ae_params, grads)",
        [AE_STEP],
        "The raw gradient is added instead of the optimiser's update.",
    ),
    m(
        "ae-rng-not-folded",
        TRAIN_AE,
        'lc = self.config.loss\n        rng = jax.random.fold_in(rng, state["step"])',
        "lc = self.config.loss\n        rng = jax.random.fold_in(rng, 0)",
        [AE_STEP],
        "The adversarial step draws the same posterior noise at every step.",
    ),
    m(
        "adam-betas-swapped",
        TRAIN_AE,
        "optax.adam(schedule, b1=o.b1, b2=o.b2)",
        "optax.adam(schedule, b1=o.b2, b2=o.b1)",
        [AE_STEP],
        "Adam's b1 and b2 are swapped.",
    ),
    m(
        "disc-lr-is-ae-lr",
        TRAIN_AE,
        "self.disc_tx = _optimizer(config.optim.disc_lr, config)",
        "self.disc_tx = _optimizer(config.optim.lr, config)",
        [AE_STEP],
        "The discriminator trains with the autoencoder's learning rate.",
    ),
    m(
        "phase-switch-late",
        TRAIN_AE,
        'return "adversarial" if step >= self.config.loss.disc_start else "reconstruction"',
        'return "adversarial" if step > self.config.loss.disc_start else "reconstruction"',
        [AE_STEP],
        "The PatchGAN switches on one step after disc_start.",
    ),
    # --- stage 1: loss formulas and bottlenecks ---------------------------------------------
    m(
        "warmup-off-by-one",
        AE_LOSS_FILE,
        "return jnp.clip(step / warmup_steps, 0.0, 1.0)",
        "return jnp.clip((step + 1) / warmup_steps, 0.0, 1.0)",
        [AE_LOSSES, AE_STEP],
        "The linear warm-up starts one step early.",
    ),
    m(
        "rec-loss-mean",
        AE_LOSS_FILE,
        "return err.reshape(err.shape[0], -1).sum(axis=1)  # [B]",
        "return err.reshape(err.shape[0], -1).mean(axis=1)  # [B]",
        [AE_LOSSES, AE_STEP],
        "Reconstruction averaged over pixels, not summed (breaks SD's kl_weight scale).",
    ),
    m(
        "free-bits-no-positions",
        AE_LOSS_FILE,
        "return positions * jnp.sum(jnp.maximum(per_channel, free_bits))",
        "return jnp.sum(jnp.maximum(per_channel, free_bits))",
        [AE_LOSSES, AE_STEP],
        "Free-bits KL not multiplied by the number of latent positions.",
    ),
    m(
        "hinge-fake-sign",
        AE_LOSS_FILE,
        "fake = jnp.mean(jax.nn.relu(1.0 + logits_fake))",
        "fake = jnp.mean(jax.nn.relu(1.0 - logits_fake))",
        [AE_LOSSES, AE_STEP],
        "The hinge discriminator loss pushes fake logits up.",
    ),
    m(
        "adaptive-weight-eps-inside",
        AE_LOSS_FILE,
        "w = jnp.linalg.norm(grad_rec) / (jnp.linalg.norm(grad_adv) + eps)",
        "w = jnp.linalg.norm(grad_rec) / jnp.linalg.norm(grad_adv + eps)",
        [AE_LOSSES, AE_STEP],
        "The adaptive weight's eps is added to every gradient entry instead of the norm.",
    ),
    m(
        "kl-logvar-sign",
        BOTTLENECK_FILE,
        "return 0.5 * (jnp.square(self.mean) + self.var - 1.0 - self.logvar)",
        "return 0.5 * (jnp.square(self.mean) + self.var - 1.0 + self.logvar)",
        [BOTTLENECK, *POSTERIOR, AE_STEP],
        "Wrong sign of log-variance in the closed-form KL.",
    ),
    m(
        "reparam-var-not-std",
        BOTTLENECK_FILE,
        "return self.mean + self.std * eps",
        "return self.mean + self.var * eps",
        [BOTTLENECK, *POSTERIOR, AE_STEP],
        "The posterior sample scales the noise by the variance instead of the std.",
    ),
    m(
        "vq-ste-stop-gradient-dropped",
        BOTTLENECK_FILE,
        "z_q = jax.lax.stop_gradient(q) + (z_e - jax.lax.stop_gradient(z_e))",
        "z_q = q + (z_e - jax.lax.stop_gradient(z_e))",
        [BOTTLENECK, AE_STEP],
        "The straight-through estimator's stop-gradient on the code is dropped: the decoder's "
        "gradient moves the codebook.",
    ),
    m(
        "vq-commitment-moves-codes",
        BOTTLENECK_FILE,
        "commitment = _per_example_sum(jnp.square(z_e - jax.lax.stop_gradient(q)))",
        "commitment = _per_example_sum(jnp.square(jax.lax.stop_gradient(z_e) - q))",
        [BOTTLENECK, AE_STEP],
        "The commitment loss's stop-gradient is on the encoder side.",
    ),
    m(
        "vq-nearest-by-dot",
        BOTTLENECK_FILE,
        "dist = jnp.sum(codebook**2, axis=1)[None, :] - 2.0 * flat @ codebook.T",
        "dist = -2.0 * flat @ codebook.T",
        [BOTTLENECK, AE_STEP],
        "Nearest code by dot product, forgetting |e|^2.",
    ),
    m(
        "vq-rotation-wrong-axis",
        BOTTLENECK_FILE,
        "rotated = e - 2.0 * r * dot(r, e) + 2.0 * q_hat * dot(e_hat, e)",
        "rotated = e - 2.0 * r * dot(r, e) + 2.0 * q_hat * dot(q_hat, e)",
        [BOTTLENECK],
        "The rotation trick's Householder pair projects on the code's direction.",
    ),
    m(
        "fsq-no-shift",
        BOTTLENECK_FILE,
        "bounded = half * jnp.tanh(z + shift) - offset",
        "bounded = half * jnp.tanh(z) - offset",
        [BOTTLENECK],
        "FSQ's bound forgets the shift that puts f(0) on a grid point for even L.",
    ),
    m(
        "restart-live-codes",
        BOTTLENECK_FILE,
        "dead = usage < threshold",
        "dead = usage > threshold",
        [BOTTLENECK],
        "Dead-code restart replaces the codes in use instead of the unused ones.",
    ),
    m(
        "restart-usage-decay-swapped",
        BOTTLENECK_FILE,
        "usage = decay * usage + (1.0 - decay) * counts",
        "usage = (1.0 - decay) * usage + decay * counts",
        [BOTTLENECK],
        "The code-usage average keeps (1 - decay) of itself.",
    ),
    m(
        "haar-detail-scale",
        "latentjax/losses/perceptual.py",
        "hh = (a - b - c + d) / 2.0  # diagonal",
        "hh = (a - b - c + d) / 4.0  # diagonal",
        [PERCEPTUAL],
        "The Haar transform is no longer orthonormal.",
    ),
    # --- stage 2: the step (train/dit.py) ----------------------------------------------------
    m(
        "label-drop-real-class",
        TRAIN_DIT,
        "labels = jnp.where(drop, self.null_label, labels)",
        "labels = jnp.where(drop, 0, labels)",
        [DIT_STEP],
        "Dropped labels are set to class 0 instead of the null index num_classes.",
    ),
    m(
        "dit-latents-not-detached",
        TRAIN_DIT,
        "z = jax.lax.stop_gradient(self.latents(frozen, batch, enc_rng))",
        "z = self.latents(frozen, batch, enc_rng)",
        [DIT_STEP],
        "The frozen encoder's latents are not detached.",
        equivalent="Equivalent here: the loss is differentiated with respect to the DiT's "
        "parameters only (`jax.value_and_grad(loss_fn)(state['params'])`), so the frozen "
        "encoder gets no gradient either way and the update is the same.",
    ),
    m(
        "null-label-last-class",
        TRAIN_DIT,
        "return self.config.model.num_classes\n",
        "return self.config.model.num_classes - 1\n",
        [DIT_STEP, GENERATE],
        "The null label is num_classes - 1, a real class.",
    ),
    m(
        "label-drop-inverted",
        TRAIN_DIT,
        "drop = jax.random.bernoulli(drop_rng, c.diffusion.label_drop, labels.shape)",
        "drop = jax.random.bernoulli(drop_rng, 1.0 - c.diffusion.label_drop, labels.shape)",
        [DIT_STEP],
        "Labels are kept with probability label_drop instead of dropped.",
    ),
    m(
        "ema-warmup-inverted",
        TRAIN_DIT,
        "return jnp.minimum(decay, (1.0 + n) / (10.0 + n))",
        "return jnp.minimum(decay, 1.0 - (1.0 + n) / (10.0 + n))",
        [DIT_STEP],
        "The EMA warm-up is inverted: decay starts near 0.9 and falls.",
    ),
    m(
        "ema-warmup-dropped",
        TRAIN_DIT,
        "return jnp.minimum(decay, (1.0 + n) / (10.0 + n))",
        "return jnp.minimum(decay, (10.0 + n) / (1.0 + n))",
        [DIT_STEP],
        "The EMA warm-up fraction is upside down, so the full decay applies from step 0.",
    ),
    m(
        "ema-weights-swapped",
        TRAIN_DIT,
        "lambda e, p: decay * e + (1.0 - decay) * p",
        "lambda e, p: decay * p + (1.0 - decay) * e",
        [DIT_STEP],
        "The EMA keeps (1 - decay) of itself.",
    ),
    m(
        "ema-of-old-params",
        TRAIN_DIT,
        'state["ema_params"], params)',
        'state["ema_params"], state["params"])',
        [DIT_STEP],
        "The EMA averages the parameters before this step's update.",
    ),
    m(
        "min-snr-gamma-not-passed",
        TRAIN_DIT,
        "                min_snr_gamma=c.diffusion.min_snr_gamma,\n",
        "",
        [DIT_STEP],
        "The step ignores diffusion.min_snr_gamma (the default 5 is used).",
    ),
    m(
        "dit-rng-not-folded",
        TRAIN_DIT,
        "rng = jax.random.fold_in(rng, step)",
        "rng = jax.random.fold_in(rng, 0)",
        [DIT_STEP],
        "Every stage-2 step draws the same times, noise and label drops.",
    ),
    m(
        "dit-weight-decay-dropped",
        TRAIN_DIT,
        "weight_decay=o.weight_decay,",
        "weight_decay=0.0,",
        [DIT_STEP],
        "optim.weight_decay is ignored.",
    ),
    m(
        "cache-std-ignored",
        TRAIN_DIT,
        'z = batch["mean"] + batch["std"] * eps',
        'z = batch["mean"]',
        [DIT_STEP],
        "Latents from the cache are the posterior means, not samples.",
    ),
    # --- stage 2: objective, weightings, paths -----------------------------------------------
    m(
        "min-snr-max",
        DIFF_LOSS,
        "return jnp.minimum(snr, gamma)",
        "return jnp.maximum(snr, gamma)",
        [WEIGHTING, DIT_STEP],
        "min-SNR clips from below.",
    ),
    m(
        "snr-plus-one-is-snr",
        DIFF_LOSS,
        "return snr + 1.0",
        "return snr",
        [WEIGHTING],
        "snr_plus_one weighs by SNR.",
    ),
    m(
        "truncated-snr-min",
        DIFF_LOSS,
        "return jnp.maximum(snr, 1.0)",
        "return jnp.minimum(snr, 1.0)",
        [WEIGHTING],
        "truncated_snr takes min(SNR, 1).",
    ),
    m(
        "v-jacobian-sign",
        DIFF_LOSS,
        "p, q = -sigma, alpha",
        "p, q = sigma, alpha",
        [WEIGHTING, DIT_STEP],
        "v's x0 coefficient has the wrong sign in the weight conversion.",
    ),
    m(
        "jacobian-alpha-sigma-swapped",
        DIFF_LOSS,
        "jacobian = p - q * alpha / sigma",
        "jacobian = p - q * sigma / alpha",
        [WEIGHTING, DIT_STEP],
        "The weight conversion uses sigma / alpha for d eps / d x0.",
    ),
    m(
        "weight-not-squared",
        DIFF_LOSS,
        "return x0_weight(path, weighting, t, gamma) / jnp.square(jacobian)",
        "return x0_weight(path, weighting, t, gamma) / jnp.abs(jacobian)",
        [WEIGHTING, DIT_STEP],
        "The output weight divides by |J| instead of J^2.",
    ),
    m(
        "loss-gamma-not-passed",
        DIFF_LOSS,
        "_bcast(output_weight(p, prediction, weighting, t, min_snr_gamma), err)",
        "_bcast(output_weight(p, prediction, weighting, t), err)",
        [WEIGHTING, DIT_STEP],
        "diffusion_loss ignores min_snr_gamma.",
    ),
    m(
        "network-time-unscaled",
        DIFF_LOSS,
        "out = apply_fn(params, x_t, t * 1000.0, labels)[..., : x0.shape[-1]]",
        "out = apply_fn(params, x_t, t, labels)[..., : x0.shape[-1]]",
        [WEIGHTING, DIT_STEP],
        "The network gets t in [0, 1] in training but 1000 t when sampling.",
    ),
    m(
        "logit-normal-not-squashed",
        DIFF_LOSS,
        "t = jax.nn.sigmoid(jax.random.normal(rng, (n,)))",
        "t = jax.random.normal(rng, (n,))",
        [DIFFUSION],
        "Logit-normal times forget the sigmoid (then clipped to the ends).",
    ),
    m(
        "log-snr-halved",
        PATHS,
        "return 2.0 * (jnp.log(self.alpha(t)) - jnp.log(self.sigma(t)))",
        "return jnp.log(self.alpha(t)) - jnp.log(self.sigma(t))",
        [WEIGHTING, DIT_STEP],
        "log SNR is log(alpha / sigma) (DPM-Solver's lambda), not its double.",
    ),
    m(
        "v-target-swapped",
        PATHS,
        "return alpha * eps - sigma * x0",
        "return alpha * x0 - sigma * eps",
        [DIFFUSION, WEIGHTING],
        "v = alpha x0 - sigma eps instead of alpha eps - sigma x0.",
    ),
    m(
        "velocity-target-swapped",
        PATHS,
        "return d_alpha * x0 + d_sigma * eps",
        "return d_sigma * x0 + d_alpha * eps",
        [DIFFUSION, WEIGHTING],
        "The velocity target pairs the derivatives with the wrong terms.",
    ),
    m(
        "ddpm-linear-beta-end",
        PATHS,
        "betas = np.linspace(1e-4, 0.02, n, dtype=np.float64)",
        "betas = np.linspace(1e-4, 0.002, n, dtype=np.float64)",
        [WEIGHTING],
        "The DDPM linear schedule ends at beta 0.002 instead of 0.02.",
    ),
    m(
        "ddpm-scaled-linear-not-squared",
        PATHS,
        "betas = np.linspace(0.00085**0.5, 0.012**0.5, n, dtype=np.float64) ** 2",
        "betas = np.linspace(0.00085, 0.012, n, dtype=np.float64)",
        [WEIGHTING],
        "scaled_linear is linear in beta, not in sqrt(beta).",
    ),
    m(
        "ddpm-cosine-offset",
        PATHS,
        "f = np.cos((np.arange(n + 1) / n + s) / (1 + s) * _HALF_PI) ** 2",
        "f = np.cos((np.arange(n + 1) / n) * _HALF_PI) ** 2",
        [WEIGHTING],
        "The cosine schedule loses its offset s = 0.008.",
    ),
    m(
        "ddpm-table-off-by-one",
        PATHS,
        "return np.concatenate([[0.0], np.cumsum(np.log1p(-betas))])",
        "return np.cumsum(np.log1p(-betas))",
        [WEIGHTING],
        "The table forgets alpha_bar_0 = 1, so every alpha_bar sits one step early.",
    ),
    m(
        "cosine-sigma-unscaled",
        PATHS,
        "return jnp.sin(_HALF_PI * t)",
        "return jnp.sin(t)",
        [DIFFUSION, WEIGHTING],
        "The cosine path's sigma forgets pi / 2.",
    ),
    # --- samplers ------------------------------------------------------------------------------
    m(
        "cfg-mix-from-cond",
        SAMPLERS_FILE,
        "out = uncond + cfg_scale * (cond - uncond)",
        "out = cond + cfg_scale * (cond - uncond)",
        [DIFFUSION, SAMPLERS],
        "Guidance extrapolates from the conditional output.",
    ),
    m(
        "guidance-interval-or",
        SAMPLERS_FILE,
        "inside = (t >= lo) & (t <= hi)  # [B]",
        "inside = (t >= lo) | (t <= hi)  # [B]",
        [SAMPLERS],
        "The guidance interval is a union of half-lines.",
    ),
    m(
        "heun-full-average",
        SAMPLERS_FILE,
        "return x + (s - t) * 0.5 * (v_t + v_s)",
        "return x + (s - t) * (v_t + v_s)",
        [SAMPLERS],
        "Heun's corrector sums the two slopes instead of averaging them.",
    ),
    m(
        "em-noise-scale",
        SAMPLERS_FILE,
        "g = jnp.sqrt(2.0 * p.sigma(t) * dtau)",
        "g = jnp.sqrt(p.sigma(t) * dtau)",
        [SAMPLERS],
        "Euler-Maruyama's noise is too small for its drift.",
    ),
    m(
        "dpmpp-second-order-coefficient",
        SAMPLERS_FILE,
        "d = jnp.where(second, (1 + 0.5 / r) * x0_hat - (0.5 / r) * x0_prev, x0_hat)",
        "d = jnp.where(second, (1 + 1.0 / r) * x0_hat - (1.0 / r) * x0_prev, x0_hat)",
        [SAMPLERS],
        "DPM-Solver++(2M)'s correction is doubled.",
    ),
    m(
        "ddim-eta-not-squared",
        SAMPLERS_FILE,
        "c2 = (eta**2) * s_s**2 * var_ts / s_t**2 if stochastic else 0.0",
        "c2 = eta * s_s**2 * var_ts / s_t**2 if stochastic else 0.0",
        [SAMPLERS],
        "DDIM's noise variance scales with eta instead of eta^2 (Song et al. 2021, eq. 16).",
    ),
    m(
        "ddpm-posterior-variance",
        SAMPLERS_FILE,
        "std = jnp.sqrt(jnp.maximum(var_ts * s_s**2 / s_t**2, 0.0))",
        "std = jnp.sqrt(jnp.maximum(var_ts, 0.0))",
        [SAMPLERS],
        "Ancestral sampling uses the forward step's variance, not the posterior's.",
    ),
    # --- generation -----------------------------------------------------------------------------
    m(
        "denormalize-multiplies-scale",
        NORMALIZATION,
        "return z / scale + shift",
        "return z * scale + shift",
        [GENERATE],
        "Latents are un-normalised with z * scale instead of z / scale.",
    ),
    m(
        "normalize-divides-scale",
        NORMALIZATION,
        "return (z - shift) * scale",
        "return (z - shift) / scale",
        [DIT_STEP],
        "Latents are normalised with / scale instead of * scale.",
    ),
    m(
        "decode-shift-scale-swapped",
        GENERATE_FILE,
        'z = denormalize(z, frozen["latent_shift"], frozen["latent_scale"])',
        'z = denormalize(z, frozen["latent_scale"], frozen["latent_shift"])',
        [GENERATE],
        "Generation passes the scale as the shift and the shift as the scale.",
    ),
    m(
        "images-assume-unit-range",
        GENERATE_FILE,
        "pixels = jnp.round((jnp.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)",
        "pixels = jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)",
        [GENERATE],
        "Decoded images are taken to be in [0, 1], not [-1, 1].",
    ),
    m(
        "generate-null-label-zero",
        GENERATE_FILE,
        "null_label=self.stage.null_label,",
        "null_label=0,",
        [GENERATE],
        "Guidance's unconditional half uses class 0.",
    ),
    m(
        "generate-guidance-interval-dropped",
        GENERATE_FILE,
        "guidance_interval=(interval[0], interval[1]),",
        "guidance_interval=None,",
        [GENERATE],
        "The spec's guidance interval is ignored.",
    ),
    m(
        "pipeline-seed-ignored",
        PIPELINE_FILE,
        "            int(seed),\n",
        "            0,\n",
        [PIPELINE],
        "The Python pipeline samples with seed 0 whatever seed it is given.",
    ),
    m(
        "labels-repeated-not-cycled",
        GENERATE_FILE,
        "return np.resize(base, int(num)).astype(np.int32)",
        "return np.repeat(base, -(-int(num) // base.size))[: int(num)].astype(np.int32)",
        [PIPELINE],
        "Labels 0,1 for 4 images give 0,0,1,1 instead of 0,1,0,1 (CLI and pipeline alike).",
    ),
    # --- latent statistics -----------------------------------------------------------------------
    m(
        "stats-std-not-centred",
        LATENTS,
        "std = float(np.sqrt(sq_c.mean() - mean**2))",
        "std = float(np.sqrt(sq_c.mean()))",
        [STATS],
        "The latent std is the root mean square (the mean is not subtracted).",
    ),
    m(
        "stats-scale-is-std",
        LATENTS,
        '"scale": 1.0 / std,',
        '"scale": std,',
        [STATS],
        "The latent scale is the std instead of its inverse.",
    ),
    m(
        "stats-channel-std-of-means",
        LATENTS,
        '"channel_std": np.sqrt(np.maximum(sq_c - mean_c**2, 0.0)).tolist(),',
        '"channel_std": np.sqrt(np.maximum(sq_c - mean**2, 0.0)).tolist(),',
        [STATS],
        "Per-channel std centred on the global mean.",
    ),
    m(
        "cached-moments-ignore-std",
        LATENTS,
        "z = mean + std * rng.standard_normal(mean.shape, np.float32)",
        "z = mean",
        [STATS],
        "Statistics of cached latents ignore the posterior std.",
    ),
    m(
        "measured-stats-use-mode",
        TRAIN_DIT,
        "return latent_moments(posterior.sample(rng), posterior.mean)",
        "return latent_moments(posterior.mode(), posterior.mean)",
        [STATS],
        "Measured statistics use the posterior mode, not samples as training sees.",
    ),
    # --- converters and metrics ------------------------------------------------------------------
    m(
        "conv-kernel-spatial-swap",
        "latentjax/convert/common.py",
        "return np.transpose(w, (2, 3, 1, 0))",
        "return np.transpose(w, (3, 2, 1, 0))",
        [CONVERT_AE, CONVERT_DIT],
        "PyTorch conv kernels' spatial axes are swapped.",
    ),
    m(
        "ae-converter-attention-qk-swap",
        "latentjax/convert/diffusers_ae.py",
        'names += {"norm": ["group_norm"], "q": ["to_q"], "k": ["to_k"], "v": ["to_v"]}.get(',
        'names += {"norm": ["group_norm"], "q": ["to_k"], "k": ["to_q"], "v": ["to_v"]}.get(',
        [CONVERT_AE],
        "The attention's query and key weights are swapped.",
    ),
    m(
        "dit-converter-qkv-order",
        "latentjax/convert/dit.py",
        '[take(f"{b}.attn1.to_{n}.{leaf}") for n in "qkv"], axis=0',
        '[take(f"{b}.attn1.to_{n}.{leaf}") for n in "kqv"], axis=0',
        [CONVERT_DIT],
        "diffusers' q, k, v are fused in the wrong order.",
    ),
    m(
        "dit-converter-freq-shift",
        "latentjax/convert/dit.py",
        "    m.timestep_freq_shift = 1.0\n",
        "    m.timestep_freq_shift = 0.0\n",
        [CONVERT_DIT],
        "diffusers' DiT timestep frequencies (downscale_freq_shift=1) are not matched.",
    ),
    m(
        "psnr-amplitude-db",
        "latentjax/eval/metrics.py",
        "return 10.0 * jnp.log10(data_range**2 / jnp.maximum(mse, 1e-10 * data_range**2))",
        "return 20.0 * jnp.log10(data_range**2 / jnp.maximum(mse, 1e-10 * data_range**2))",
        [METRICS],
        "PSNR with 20 log10 of a power ratio.",
    ),
    m(
        "ssim-constants-unsquared",
        "latentjax/eval/metrics.py",
        "c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2",
        "c1, c2 = k1 * data_range, k2 * data_range",
        [METRICS],
        "SSIM's stabilising constants are not squared.",
    ),
]
