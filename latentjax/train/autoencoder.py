"""Stage 1: the autoencoder (KL, AE, VQ or FSQ bottleneck) with a PatchGAN; generator and
discriminator in one jitted step.

The autoencoder and the discriminator live in one state pytree with two optax transforms (as in
vdm's train state). Training has two phases, each its own compiled step: before ``disc_start``
the step computes only the reconstruction + regulariser loss; from then on it adds the
adversarial term with latent-diffusion's adaptive weight and updates the discriminator in the
same step.

Equivariance regularisation (EQ-VAE, ``loss.eq_prob`` > 0) adds one compiled step per phase and
down-scale factor: the host draws, from the seed and the step number (so a resumed run draws
the same), whether a batch is an EQ batch and which factor it gets; the rotation is drawn in
the step. On an EQ batch every loss of the phase judges ``decode(tau(z))`` against ``tau(x)``
(the discriminator sees ``tau(x)`` as its real images) instead of ``decode(z)`` against ``x``.

A video autoencoder (``model.family="video"``) trains on batches of clips ``{"video": [B, T, H,
W, C]}`` with the same recipe applied per frame: the reconstruction and perceptual terms and the
PatchGAN (the 2-D one, on every frame: see ``_frames``) see the clips' B x T frames as a batch
of images, and the KL term is the clip's KL divided by its T frames, so every weight means what
it means for an image autoencoder with the same latent per frame.

VA-VAE's VF loss (``loss.vf_weight`` > 0) aligns a 1x1 projection of the latent z (parameters
``vf_proj`` beside the autoencoder's, trained with them, unused by encode/decode) with a frozen
vision network's features of the clean image; the step weighs it by ``vf_weight`` times the
ratio of the NLL's and the VF loss's gradient norms at the encoder's last layer (one more
backward pass).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from latentjax.errors import ConfigError, WorkdirError
from latentjax.eval.autoencoder import reconstruction_sheet, video_sheet
from latentjax.eval.images import enlarge
from latentjax.eval.metrics import psnr
from latentjax.factory import build_autoencoder, build_discriminator, is_video, latent_shape
from latentjax.losses import autoencoder as losses
from latentjax.losses import perceptual
from latentjax.losses.representation import vf_loss
from latentjax.models import representation
from latentjax.models.bottleneck import restart_dead_codes
from latentjax.models.lpips import LPIPS, too_small
from latentjax.parallel import mesh as mesh_lib
from latentjax.paths import absolute
from latentjax.run import Run
from latentjax.train import state as state_lib
from latentjax.train.frozen_encoder import FrozenEncoder


def _check_loss_config(lc) -> None:
    if lc.reconstruction not in ("l1", "l2"):
        raise ConfigError(f"loss.reconstruction={lc.reconstruction!r}; use 'l1' or 'l2'")
    if lc.gan_loss not in losses.GAN_LOSSES:
        raise ConfigError(f"loss.gan_loss={lc.gan_loss!r}; use one of {losses.GAN_LOSSES}")
    if lc.perceptual not in perceptual.PERCEPTUAL_LOSSES:
        raise ConfigError(
            f"loss.perceptual={lc.perceptual!r}; use one of {perceptual.PERCEPTUAL_LOSSES}"
        )
    for key in ("kl_free_bits", "r1_weight", "lecam_weight", "perceptual_weight", "vf_weight"):
        if lc[key] < 0:
            raise ConfigError(f"loss.{key}={lc[key]} must be >= 0")
    if not 0.0 <= lc.eq_prob <= 1.0:
        raise ConfigError(f"loss.eq_prob={lc.eq_prob} must be in [0, 1]")


def _check_shaping_config(config) -> None:
    """VF and EQ train the "kl" family only; EQ-VAE's transforms must fit the latent: whole
    sides after each down-scale, square latents to rotate."""
    lc = config.loss
    if lc.vf_weight > 0 and config.model.family != "kl":
        raise ConfigError(f"loss.vf_weight needs model.family='kl', not {config.model.family!r}")
    if lc.eq_prob == 0:
        return
    if config.model.family != "kl":
        raise ConfigError(f"loss.eq_prob needs model.family='kl', not {config.model.family!r}")
    side = latent_shape(config)[0]
    if not lc.eq_scales:
        raise ConfigError("loss.eq_scales is empty; give at least one factor (1.0: no scaling)")
    for s in lc.eq_scales:
        if not 0 < s <= 1 or abs(side * s - round(side * s)) > 1e-6 or round(side * s) < 1:
            raise ConfigError(
                f"loss.eq_scales has {s}: each factor must be in (0, 1] and give a whole latent "
                f"side from {side}"
            )
    if not lc.eq_rotations or any(k not in (0, 1, 2, 3) for k in lc.eq_rotations):
        raise ConfigError(
            f"loss.eq_rotations={tuple(lc.eq_rotations)}; give quarter turns from 0, 1, 2, 3"
        )


def _optimizer(lr: float, config) -> optax.GradientTransformation:
    o = config.optim
    schedule = optax.linear_schedule(0.0, lr, max(o.warmup_steps, 1))
    parts = [optax.adam(schedule, b1=o.b1, b2=o.b2)]
    if o.grad_clip:
        parts.insert(0, optax.clip_by_global_norm(o.grad_clip))
    return optax.chain(*parts)


def _frames(x: jax.Array) -> jax.Array:
    """Clips [B, T, H, W, C] as a batch of frames [B * T, H, W, C]; images [B, H, W, C] as they
    are. The image losses judge a video frame by frame through this, and so does the 2-D
    PatchGAN (each frame's realism, not motion); ``loss.disc_temporal_kernel`` > 0 gives the 3-D
    PatchGAN, which sees whole clips (``AutoencoderStage.disc_input``)."""
    return x.reshape(-1, *x.shape[-3:]) if x.ndim == 5 else x


def _last_layer(tree: Any) -> jax.Array:
    """The decoder's output conv kernel: where the adaptive GAN weight compares gradients."""
    return tree["params"]["decoder"]["conv_out"]["kernel"]


def _encoder_last_layer(tree: Any) -> jax.Array:
    """The encoder's output conv kernel: where VA-VAE's adaptive VF weight compares gradients."""
    return tree["params"]["encoder"]["conv_out"]["kernel"]


class AutoencoderStage:
    """The stage-1 networks, optimisers and pure steps of a config. ``features``: the feature
    network for ``loss.perceptual="lpips"`` (images -> list of activations; see
    ``latentjax/losses/perceptual.py``), None otherwise."""

    def __init__(
        self,
        config,
        features: Callable[[jax.Array], Sequence[jax.Array]] | None = None,
        vf_encoder: FrozenEncoder | None = None,
    ):
        lc = config.loss
        _check_loss_config(lc)
        if lc.perceptual == "lpips" and lc.perceptual_weight > 0:
            side = config.data.image_size
            if why := too_small(side, side):
                raise ConfigError(f"loss.perceptual='lpips' {why} (data.image_size={side})")
        if lc.perceptual == "lpips" and features is None and not lc.lpips_weights:
            raise ConfigError(
                "loss.perceptual='lpips' needs loss.lpips_weights: a directory written by "
                "`latentjax convert lpips`, or 'VGG16.pth,HEADS.pth' (torchvision VGG16 and the "
                "lpips package's vgg.pth); or use 'haar' or 'fft', which need no weights"
            )
        _check_shaping_config(config)
        self.config, self.features = config, features
        self.video = is_video(config.model)
        self.key = "video" if self.video else "image"  # the batch's pixels
        self.ae = build_autoencoder(config.model)
        self.disc = build_discriminator(lc)
        self.tx = _optimizer(config.optim.lr, config)
        self.disc_tx = _optimizer(config.optim.disc_lr, config)
        self._vf_encoder = vf_encoder  # VA-VAE's frozen network; None: read on first use
        if lc.vf_weight > 0 and not lc.vf_feature_dim:  # recorded in the run's config
            lc.vf_feature_dim = self.vf_encoder.dim

    @property
    def vf_encoder(self) -> FrozenEncoder:
        """The VF loss's frozen network, read from ``loss.vf_*`` on first use (training
        only)."""
        if self._vf_encoder is None:
            lc = self.config.loss
            size = lc.vf_encoder_size
            if not size:
                side = latent_shape(self.config)[0]
                size = side * 14 if lc.vf_encoder == "dinov2" else self.config.data.image_size
            self._vf_encoder = FrozenEncoder.load(
                lc.vf_encoder,
                lc.vf_encoder_weights,
                "loss.vf_",
                size,
                lc.vf_encoder_heads,
                lc.vf_vgg_tap,
            )
            if lc.vf_feature_dim and self._vf_encoder.dim != lc.vf_feature_dim:
                raise ConfigError(
                    f"loss.vf_feature_dim={lc.vf_feature_dim} but the network's features are "
                    f"{self._vf_encoder.dim} wide"
                )
        return self._vf_encoder

    def disc_input(self, x: jax.Array) -> jax.Array:
        """What the PatchGAN judges: whole clips for the 3-D one, else images or frames."""
        return x if self.config.loss.disc_temporal_kernel else _frames(x)

    def check_disc_sees_eq_images(self) -> None:
        """Before training (``make_task``): the PatchGAN must give at least one logit on the
        smallest EQ images (an empty logit map has a NaN mean: the run would stop at the first
        adversarial EQ step)."""
        c = self.config
        if c.loss.eq_prob == 0 or c.loss.disc_start >= c.train.num_steps:
            return
        scale = min(c.loss.eq_scales)
        side = round(c.data.image_size * scale)
        x = jax.ShapeDtypeStruct((1, side, side, c.model.in_channels), jnp.float32)
        logits, _ = jax.eval_shape(lambda x: self.disc.init_with_output(jax.random.key(0), x), x)
        if 0 in logits.shape:
            raise ConfigError(
                f"loss.eq_scales has {scale}: its {side} px images are too small for the "
                f"PatchGAN (loss.disc_layers={c.loss.disc_layers}); use larger factors or a "
                "shallower discriminator"
            )

    def lpips_variables(self) -> dict | None:
        """The LPIPS network's variables from ``loss.lpips_weights`` (None unless the
        perceptual term is LPIPS). ``make_task`` passes them to the steps as frozen inputs, so
        evaluation and sampling never need the files."""
        weights = self.config.loss.lpips_weights
        if self.config.loss.perceptual != "lpips" or not weights:
            return None
        from latentjax.convert.lpips import lpips_variables

        return lpips_variables(*[w.strip() for w in weights.split(",")][:2])

    @property
    def bottleneck(self) -> str:
        return self.ae.bottleneck

    @property
    def uses_restart(self) -> bool:
        return self.bottleneck == "vq" and self.config.loss.vq_restart_threshold > 0

    @property
    def uses_vf(self) -> bool:
        return self.config.loss.vf_weight > 0

    @property
    def uses_lecam(self) -> bool:
        return self.config.loss.lecam_weight > 0

    def example_input(self) -> jax.Array:
        """One image [1, S, S, C], or a one-frame clip [1, 1, S, S, C] for a video autoencoder
        (its parameters do not depend on the clip's length)."""
        s, c = self.config.data.image_size, self.config.model.in_channels
        return jnp.zeros((1, 1, s, s, c) if self.video else (1, s, s, c), jnp.float32)

    def init_state(self, rng: jax.Array) -> dict[str, Any]:
        ae_rng, disc_rng, sample_rng = jax.random.split(rng, 3)
        x = self.example_input()
        ae_params = self.ae.init({"params": ae_rng, "sample": sample_rng}, x)
        if self.uses_vf:
            # The VF projection z -> feature width (a 1x1 conv as a Dense over channels), with
            # a key of its own so the other parameters are those of a run without it.
            proj = nn.Dense(self.config.loss.vf_feature_dim, name="vf_proj").init(
                jax.random.fold_in(rng, 7), jnp.zeros((1, self.ae.latent_channels))
            )["params"]
            ae_params = {**ae_params, "params": {**ae_params["params"], "vf_proj": proj}}
        disc_params = self.disc.init(disc_rng, self.disc_input(x))
        state = {
            "step": jnp.zeros((), jnp.int32),
            "params": {"ae": ae_params, "disc": disc_params},
            "opt_state": {"ae": self.tx.init(ae_params), "disc": self.disc_tx.init(disc_params)},
        }
        if self.uses_restart:
            # Moving average of each code's assignments per step; 0 makes the first step fill
            # the codebook with encoder outputs (see restart_dead_codes).
            state["vq_usage"] = jnp.zeros((self.ae.codebook_size,), jnp.float32)
        if self.uses_lecam:
            # Moving averages of the discriminator's mean logit on real and on fake images.
            state["lecam"] = {k: jnp.zeros((), jnp.float32) for k in ("real", "fake")}
        return state

    def regulariser(
        self, posterior, step: jax.Array, frames: int = 1
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The bottleneck's weighted regularisation loss (batch mean; per frame of a clip of
        ``frames`` frames) and its metrics."""
        lc = self.config.loss
        terms = {k: jnp.mean(v) for k, v in posterior.terms().items()}
        if frames != 1:
            terms = {k: v / frames for k, v in terms.items()}
        metrics = {**terms, **posterior.stats()}
        if self.bottleneck == "kl":
            kl_scale = lc.kl_weight * losses.linear_warmup(step, lc.kl_warmup_steps)
            kl = terms["kl"]
            if lc.kl_free_bits > 0:
                kl = losses.free_bits_kl(posterior.kl_elements(), lc.kl_free_bits)
            return kl_scale * kl, {**metrics, "kl_scale": kl_scale}
        if self.bottleneck == "vq":
            # VQ-VAE's eq. 3 codebook + beta * commitment, weighted as taming's codebook_weight.
            reg = terms["codebook"] + lc.commitment_weight * terms["commitment"]
            return lc.codebook_weight * reg, metrics
        return jnp.zeros((), jnp.float32), metrics

    def _losses(self, state, batch, rng, frozen=None, eq_scale=None):
        """Closures over one batch: the NLL (reconstruction + perceptual + the bottleneck's
        regulariser) and the generator's adversarial loss, both as functions of the
        autoencoder parameters. With ``eq_scale`` (an EQ batch), the decoder decodes the
        transformed latent tau(z) and the target is tau(x) (``aux["target"]``)."""
        lc = self.config.loss
        image = batch[self.key]  # [B, H, W, C] (or [B, T, H, W, C]) in [-1, 1]
        frames = image.shape[1] if self.video else 1
        kind = lc.perceptual
        distance = None
        if frozen and "lpips" in frozen:
            distance = functools.partial(LPIPS().apply, frozen["lpips"])
        x, turns = image, None
        if eq_scale is not None:
            # A key of its own (fold_in 2): the sample and the VQ restart keys are unchanged.
            turns = losses.draw_quarter_turns(jax.random.fold_in(rng, 2), lc.eq_rotations)
            x = losses.equivariance_transform(image, eq_scale, turns)

        vf_features = None
        if self.uses_vf:
            # The frozen network's features of the clean images on the latent grid.
            side = latent_shape(self.config)[0]
            f = self.vf_encoder.features(frozen["vf"], image)
            vf_features = jax.lax.stop_gradient(representation.to_grid(f, side))

        def forward(p):
            """-> (x_hat, posterior, the latent before any transform or None)."""
            if turns is None and vf_features is None:
                x_hat, posterior = self.ae.apply(p, image, sample=True, rngs={"sample": rng})
                return x_hat, posterior, None
            posterior = self.ae.apply(p, image, method=self.ae.encode)
            z = posterior.sample(rng) if self.bottleneck == "kl" else posterior.mode()
            decoded = z if turns is None else losses.equivariance_transform(z, eq_scale, turns)
            # The decoder alone (no VQ/FSQ snap: tau(z_q) is decoded as it is, its gradient
            # passing to the encoder as the plain step's does).
            x_hat = self.ae.apply(p, decoded, method=lambda m, z: m._decode(z))
            return x_hat, posterior, z

        def nll_loss(p):
            x_hat, posterior, z = forward(p)
            rec = jnp.mean(
                losses.reconstruction_loss(_frames(x), _frames(x_hat), lc.reconstruction)
            )
            aux = {"x_hat": x_hat, "rec": rec, "target": x}
            if vf_features is not None:
                w = p["params"]["vf_proj"]
                projected = z @ w["kernel"] + w["bias"]  # the 1x1 projection [B, h, w, D]
                aux["vf"], vf_terms = vf_loss(
                    projected, vf_features, lc.vf_cos_margin, lc.vf_distmat_margin
                )
                aux.update(vf_terms)
            if kind != "none":
                term = perceptual.perceptual_loss(
                    kind, _frames(x), _frames(x_hat), self.features, distance
                )
                term = jnp.mean(term)
                rec = rec + lc.perceptual_weight * term
                aux["perceptual"] = term
            reg, reg_metrics = self.regulariser(posterior, state["step"], frames)
            if self.uses_restart:
                aux["vq"] = {"indices": posterior.indices, "inputs": posterior.pre_quant}
            return rec + reg, {**aux, **reg_metrics}

        def generator_losses(p):
            """-> ((nll, adversarial loss[, VF loss]), aux)."""
            nll, aux = nll_loss(p)
            logits = self.disc.apply(state["params"]["disc"], self.disc_input(aux["x_hat"]))
            outs = (nll, losses.g_loss(lc.gan_loss, logits))
            if "vf" in aux:
                outs = (*outs, aux.pop("vf"))
            return outs, aux

        return nll_loss, generator_losses

    def reconstruction_step(self, state, frozen, batch, rng, eq_scale=None):
        """Before ``disc_start``: reconstruction + regulariser only; the discriminator is
        untouched."""
        rng = jax.random.fold_in(rng, state["step"])
        nll_loss, _ = self._losses(state, batch, rng, frozen, eq_scale)
        vf_metrics = {}
        if not self.uses_vf:
            (nll, aux), grads = jax.value_and_grad(nll_loss, has_aux=True)(state["params"]["ae"])
        else:

            def terms(p):
                nll, aux = nll_loss(p)
                return (nll, aux.pop("vf")), aux

            outs, vjp, aux = jax.vjp(terms, state["params"]["ae"], has_aux=True)
            nll = outs[0]
            g_nll, g_vf = (vjp(_basis(outs, i))[0] for i in range(2))
            w_vf = self._vf_weight(g_nll, g_vf)
            grads = jax.tree.map(lambda a, b: a + w_vf * b, g_nll, g_vf)
            vf_metrics = {"vf": outs[1], "vf_adaptive_weight": w_vf}
        zero = jnp.zeros((), jnp.float32)
        metrics = {"nll": nll, "g_adv": zero, "d_loss": zero, "adaptive_weight": zero}
        metrics.update(self._zero_disc_extras())
        metrics.update(vf_metrics)
        return self._apply(
            state,
            grads,
            state["params"]["disc"],
            state["opt_state"]["disc"],
            {**metrics, **_scalars(aux)},
            aux=aux,
            rng=rng,
        )

    def _vf_weight(self, g_nll, g_vf) -> jax.Array:
        """vf_weight x ||grad NLL|| / (||grad L_vf|| + 1e-4) at the encoder's last layer,
        clipped to [0, 1e4] and not differentiated (VA-VAE, eq. 4: latent-diffusion's adaptive
        weight moved to the encoder)."""
        return self.config.loss.vf_weight * losses.adaptive_weight(
            _encoder_last_layer(g_nll), _encoder_last_layer(g_vf)
        )

    def _zero_disc_extras(self) -> dict[str, jax.Array]:
        """The regulariser metrics of the adversarial phase, zero before it (same keys in both
        phases keeps metrics.jsonl rectangular)."""
        zero = jnp.zeros((), jnp.float32)
        lc = self.config.loss
        out = {}
        if lc.r1_weight > 0:
            out["r1"] = zero
        if self.uses_lecam:
            out["lecam"] = zero
        return out

    def adversarial_step(self, state, frozen, batch, rng, eq_scale=None):
        """From ``disc_start``: adds the PatchGAN term with the adaptive weight and updates the
        discriminator (hinge or non-saturating loss, optional R1/LeCam) on the same batch with
        its own optimiser."""
        lc = self.config.loss
        rng = jax.random.fold_in(rng, state["step"])
        _, generator_losses = self._losses(state, batch, rng, frozen, eq_scale)
        ae_params, disc_params = state["params"]["ae"], state["params"]["disc"]
        # One forward pass, two backward passes: the adaptive weight compares the gradients of
        # the NLL and of the adversarial loss at the decoder's last layer (Esser et al. 2021,
        # eq. 7).
        outs, vjp, aux = jax.vjp(generator_losses, ae_params, has_aux=True)
        nll, adv = outs[:2]
        (g_nll,) = vjp(_basis(outs, 0))
        (g_adv,) = vjp(_basis(outs, 1))
        weight = lc.disc_weight * losses.adaptive_weight(_last_layer(g_nll), _last_layer(g_adv))
        grads = jax.tree.map(lambda a, b: a + weight * b, g_nll, g_adv)
        vf_metrics = {}
        if self.uses_vf:  # VA-VAE's VF term with its own adaptive weight (a third pass)
            (g_vf,) = vjp(_basis(outs, 2))
            w_vf = self._vf_weight(g_nll, g_vf)
            grads = jax.tree.map(lambda a, b: a + w_vf * b, grads, g_vf)
            vf_metrics = {"vf": outs[2], "vf_adaptive_weight": w_vf}

        x = self.disc_input(aux["target"])
        fake = self.disc_input(jax.lax.stop_gradient(aux["x_hat"]))
        gan, r1_weight, lecam_weight = lc.gan_loss, lc.r1_weight, lc.lecam_weight
        ema = state.get("lecam")

        def disc_loss(dp):
            logits_real, logits_fake = self.disc.apply(dp, x), self.disc.apply(dp, fake)
            loss = losses.d_loss(gan, logits_real, logits_fake)
            extras = {}
            if r1_weight > 0:
                # gamma / 2 * E ||grad_x D(x)||^2 (Mescheder et al. 2018, eq. 9).
                extras["r1"] = losses.r1_penalty(lambda im: self.disc.apply(dp, im), x)
                loss = loss + 0.5 * r1_weight * extras["r1"]
            if ema is not None:
                extras["lecam"] = losses.lecam_penalty(
                    logits_real, logits_fake, ema["real"], ema["fake"]
                )
                loss = loss + lecam_weight * extras["lecam"]
            means = {"real": jnp.mean(logits_real), "fake": jnp.mean(logits_fake)}
            return loss, (extras, means)

        (d_loss, (extras, means)), d_grads = jax.value_and_grad(disc_loss, has_aux=True)(
            disc_params
        )
        updates, disc_opt = self.disc_tx.update(d_grads, state["opt_state"]["disc"], disc_params)
        disc = optax.apply_updates(disc_params, updates)
        metrics = {"nll": nll, "g_adv": adv, "d_loss": d_loss, "adaptive_weight": weight}
        metrics.update(vf_metrics)
        extra_state = {}
        if ema is not None:
            decay = lc.lecam_decay
            extra_state["lecam"] = {
                k: decay * ema[k] + (1.0 - decay) * jax.lax.stop_gradient(means[k]) for k in ema
            }
        return self._apply(
            state,
            grads,
            disc,
            disc_opt,
            {**metrics, **extras, **_scalars(aux)},
            extra_state,
            aux=aux,
            rng=rng,
        )

    def _apply(self, state, grads, disc, disc_opt, metrics, extra_state=None, aux=None, rng=None):
        ae_params = state["params"]["ae"]
        updates, opt = self.tx.update(grads, state["opt_state"]["ae"], ae_params)
        ae = optax.apply_updates(ae_params, updates)
        extra_state = dict(extra_state or {})
        if self.uses_restart:
            lc = self.config.loss
            codebook, usage, restarted = restart_dead_codes(
                ae["params"]["quantize"]["embedding"],
                state["vq_usage"],
                aux["vq"]["indices"],
                aux["vq"]["inputs"],
                jax.random.fold_in(rng, 1),  # the step's key, not used for anything else
                decay=lc.vq_usage_decay,
                threshold=lc.vq_restart_threshold,
            )
            quantize = {**ae["params"]["quantize"], "embedding": codebook}
            ae = {**ae, "params": {**ae["params"], "quantize": quantize}}
            extra_state["vq_usage"] = usage
            metrics = {**metrics, "restarted_codes": jnp.sum(restarted).astype(jnp.float32)}
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
        metrics["param_norm"] = optax.tree.norm(ae)
        new_state = {
            **state,
            "step": state["step"] + 1,
            "params": {"ae": ae, "disc": disc},
            "opt_state": {"ae": opt, "disc": disc_opt},
            **extra_state,
        }
        return new_state, metrics

    def phase(self, step: int) -> str:
        """The step that runs after ``step`` updates: the loss phase, with ``@eq<factor>`` on
        an EQ batch (drawn on the host from the seed and ``step``, so the same on resume)."""
        lc = self.config.loss
        name = "adversarial" if step >= lc.disc_start else "reconstruction"
        if lc.eq_prob > 0:
            draw = np.random.default_rng([self.config.seed, 0x4551, step])
            if draw.random() < lc.eq_prob:
                return f"{name}@eq{lc.eq_scales[draw.integers(len(lc.eq_scales))]}"
        return name

    def train_steps(self) -> dict[str, Callable]:
        """Every step :meth:`phase` may name; the EQ variants first, so the last is the
        adversarial phase's plain step (``latentjax plan``'s default)."""
        plain = {"reconstruction": self.reconstruction_step, "adversarial": self.adversarial_step}
        steps = {}
        if self.config.loss.eq_prob > 0:
            for name, fn in plain.items():
                for s in self.config.loss.eq_scales:
                    steps[f"{name}@eq{s}"] = functools.partial(fn, eq_scale=float(s))
        return {**steps, **plain}

    def reconstruct(self, ae_params, images: jax.Array) -> jax.Array:
        """Deterministic reconstruction through the posterior mode (quantised for VQ/FSQ)."""
        x_hat, _ = self.ae.apply(ae_params, images, sample=False)
        return jnp.clip(x_hat, -1.0, 1.0)

    def reconstruct_with_stats(self, ae_params, images: jax.Array):
        """-> (clipped reconstruction, the bottleneck's scalar stats on ``images``)."""
        x_hat, posterior = self.ae.apply(ae_params, images, sample=False)
        return jnp.clip(x_hat, -1.0, 1.0), posterior.stats()

    def encode_latents(self, ae_params, images: jax.Array) -> jax.Array:
        """The deterministic latent a stage-2 model should learn: the posterior mean for KL, z
        for AE, the quantised z for VQ/FSQ. [B, H, W, C] -> [B, h, w, latent channels]"""
        return self.ae.apply(ae_params, images, method=self.ae.encode).mode()


def _basis(outs: tuple, i: int) -> tuple:
    """The cotangent that pulls back output ``i`` of a vjp alone."""
    return tuple(jnp.ones_like(o) if j == i else jnp.zeros_like(o) for j, o in enumerate(outs))


def _scalars(aux: dict[str, Any]) -> dict[str, jax.Array]:
    return {k: v for k, v in aux.items() if isinstance(v, jax.Array) and v.ndim == 0}


def make_task(
    config, mesh, eval_images: Any | None = None, stage: AutoencoderStage | None = None
) -> state_lib.Task:
    """The loop's task for ``config``; ``stage``: one built already (e.g. with a frozen VF
    network passed in), else built here."""
    stage = stage or AutoencoderStage(config)
    stage.check_disc_sees_eq_images()
    repl = mesh_lib.replicated(mesh)
    # The perceptual network, when there is one, is a frozen input of the steps (replicated).
    lpips = stage.lpips_variables()
    frozen = {} if lpips is None else {"lpips": jax.device_put(lpips, repl)}
    if stage.uses_vf:  # VA-VAE's frozen network, replicated like LPIPS's
        frozen["vf"] = jax.device_put(stage.vf_encoder.variables, repl)
    evaluate = None
    if eval_images is not None:
        # Replicated over the mesh, so the same program runs on every process of a pod.
        x = jax.device_put(np.asarray(eval_images), mesh_lib.replicated(mesh))

        recon = jax.jit(stage.reconstruct_with_stats)

        def evaluate(state, step):
            del step
            x_hat, stats = recon(state["params"]["ae"], x)
            # Per image; per frame for clips (the mean of the frames' PSNRs).
            out = {"test_psnr": float(jnp.mean(psnr(_frames(x), _frames(x_hat))))}
            return {**out, **{f"test_{k}": float(v) for k, v in stats.items()}}

    images = None
    if eval_images is not None and config.train.eval_images:
        shown = np.asarray(eval_images[: config.train.eval_images])
        shown_device = jax.device_put(shown, mesh_lib.replicated(mesh))
        # Replicated output: every process runs it, process 0 writes what it gets.
        encode_decode = jax.jit(
            lambda p, x: (stage.reconstruct(p, x), stage.encode_latents(p, x)),
            out_shardings=mesh_lib.replicated(mesh),
        )

        def images(state, step):
            del step
            x_hat, z = jax.device_get(encode_decode(state["params"]["ae"], shown_device))
            if stage.video:  # each clip's frames over its reconstruction's
                sheet = video_sheet(shown, x_hat)
            else:
                sheet = reconstruction_sheet(shown, x_hat, z)
            return {"eval/reconstructions": enlarge(sheet, size=shown.shape[-2])}

    warm_start = None
    if config.init_from:
        source = Run.open(config.init_from, stage="ae")

        def warm_start(state):
            """The fresh state with the autoencoder's parameters of ``init_from`` (read as
            that run's own stage reads them), placed as the fresh ones (this run's rules). What
            the source lacks (a new VF projection) stays fresh; the optimiser's moments start
            at zero."""
            _, restored = load_autoencoder(source, mesh)
            fresh = dict(state["params"]["ae"]["params"])
            for name in fresh:
                if name in restored["params"]:
                    chex.assert_trees_all_equal_shapes_and_dtypes(
                        restored["params"][name], fresh[name]
                    )
                    fresh[name] = jax.tree.map(
                        lambda r, f: jax.device_put(r, f.sharding),
                        restored["params"][name],
                        fresh[name],
                    )
            ae = {**state["params"]["ae"], "params": fresh}
            return {**state, "params": {**state["params"], "ae": ae}}

    return state_lib.Task(
        name="ae",
        init_state=stage.init_state,
        train_steps=stage.train_steps(),
        frozen=frozen,
        frozen_shardings=jax.tree.map(lambda _: repl, frozen),
        evaluate=evaluate,
        images=images,
        phase=stage.phase,
        warm_start=warm_start,
    )


def adopt_init_from(config) -> None:
    """For ``init_from``: the model section of the run it names replaces ``config``'s (a
    fine-tune trains that network); a one-line error if there is no stage-1 run there."""
    if not config.init_from:
        return
    try:
        source = Run.open(config.init_from, stage="ae")
    except WorkdirError as e:
        raise ConfigError(f"init_from={config.init_from!r}: no stage-1 run there ({e})") from e
    config.init_from = str(absolute(source.path))
    with config.ignore_type():
        config.model = ml_collections.ConfigDict(source.config.model.to_dict())


def load_autoencoder(run: Run, mesh) -> tuple[AutoencoderStage, Any]:
    """A finished stage-1 run (training run or inference checkpoint): (stage, autoencoder
    parameters placed on ``mesh``)."""
    stage = AutoencoderStage(run.config)
    return stage, state_lib.restore(run, stage.init_state, mesh)["params"]["ae"]
