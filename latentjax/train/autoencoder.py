"""Stage 1: the KL autoencoder with a PatchGAN; generator and discriminator in one jitted step.

The autoencoder and the discriminator live in one state pytree with two optax transforms (as in
vdm's train state). Training has two phases, each its own compiled step: before ``disc_start``
the step computes only the reconstruction + KL loss; from then on it adds the adversarial term
with latent-diffusion's adaptive weight and updates the discriminator in the same step.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from latentjax.config import from_json
from latentjax.errors import WorkdirError
from latentjax.losses import autoencoder as losses
from latentjax.models.autoencoder import AutoencoderKL
from latentjax.models.discriminator import PatchDiscriminator
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import loop


def build_autoencoder(model_config) -> AutoencoderKL:
    m = model_config
    return AutoencoderKL(
        ch=m.ch,
        ch_mult=tuple(m.ch_mult),
        num_res_blocks=m.num_res_blocks,
        z_channels=m.z_channels,
        in_channels=m.in_channels,
        attn_resolutions=tuple(m.attn_resolutions),
        num_groups=m.num_groups,
        embed_dim=m.embed_dim or None,
    )


def build_discriminator(loss_config) -> PatchDiscriminator:
    return PatchDiscriminator(
        ndf=loss_config.disc_ndf, n_layers=loss_config.disc_layers, norm=loss_config.disc_norm
    )


def _optimizer(lr: float, config) -> optax.GradientTransformation:
    o = config.optim
    schedule = optax.linear_schedule(0.0, lr, max(o.warmup_steps, 1))
    parts = [optax.adam(schedule, b1=o.b1, b2=o.b2)]
    if o.grad_clip:
        parts.insert(0, optax.clip_by_global_norm(o.grad_clip))
    return optax.chain(*parts)


def _last_layer(tree: Any) -> jax.Array:
    """The decoder's output conv kernel: where the adaptive GAN weight compares gradients."""
    return tree["params"]["decoder"]["conv_out"]["kernel"]


@dataclasses.dataclass(frozen=True)
class AutoencoderStage:
    config: Any

    def __post_init__(self):
        object.__setattr__(self, "ae", build_autoencoder(self.config.model))
        object.__setattr__(self, "disc", build_discriminator(self.config.loss))
        object.__setattr__(self, "tx", _optimizer(self.config.optim.lr, self.config))
        object.__setattr__(self, "disc_tx", _optimizer(self.config.optim.disc_lr, self.config))

    def example_input(self) -> jax.Array:
        s, c = self.config.data.image_size, self.config.model.in_channels
        return jnp.zeros((1, s, s, c), jnp.float32)

    def init_state(self, rng: jax.Array) -> dict[str, Any]:
        ae_rng, disc_rng, sample_rng = jax.random.split(rng, 3)
        x = self.example_input()
        ae_params = self.ae.init({"params": ae_rng, "sample": sample_rng}, x)
        disc_params = self.disc.init(disc_rng, x)
        return {
            "step": jnp.zeros((), jnp.int32),
            "params": {"ae": ae_params, "disc": disc_params},
            "opt_state": {"ae": self.tx.init(ae_params), "disc": self.disc_tx.init(disc_params)},
        }

    def _losses(self, state, batch, rng):
        """Closures over one batch: the NLL (reconstruction + warmed-up KL) and the generator's
        adversarial loss, both as functions of the autoencoder parameters."""
        lc = self.config.loss
        x = batch["image"]  # [B, H, W, C] in [-1, 1]
        kl_scale = lc.kl_weight * losses.linear_warmup(state["step"], lc.kl_warmup_steps)

        def nll_loss(p):
            x_hat, posterior = self.ae.apply(p, x, sample=True, rngs={"sample": rng})
            rec = jnp.mean(losses.reconstruction_loss(x, x_hat, lc.reconstruction))
            kl = jnp.mean(posterior.kl())
            return rec + kl_scale * kl, {"x_hat": x_hat, "rec": rec, "kl": kl}

        def generator_losses(p):
            nll, aux = nll_loss(p)
            logits = self.disc.apply(state["params"]["disc"], aux["x_hat"])
            return (nll, losses.hinge_g_loss(logits)), aux

        return nll_loss, generator_losses, kl_scale

    def reconstruction_step(self, state, frozen, batch, rng):
        """Before ``disc_start``: reconstruction + KL only; the discriminator is untouched."""
        del frozen
        rng = jax.random.fold_in(rng, state["step"])
        nll_loss, _, kl_scale = self._losses(state, batch, rng)
        (nll, aux), grads = jax.value_and_grad(nll_loss, has_aux=True)(state["params"]["ae"])
        zero = jnp.zeros((), jnp.float32)
        metrics = {"nll": nll, "g_adv": zero, "d_loss": zero, "adaptive_weight": zero}
        return self._apply(
            state,
            grads,
            state["params"]["disc"],
            state["opt_state"]["disc"],
            {**metrics, **_scalars(aux), "kl_scale": kl_scale},
        )

    def adversarial_step(self, state, frozen, batch, rng):
        """From ``disc_start``: adds the PatchGAN term with the adaptive weight and updates the
        discriminator (hinge loss) on the same batch."""
        del frozen
        lc = self.config.loss
        rng = jax.random.fold_in(rng, state["step"])
        _, generator_losses, kl_scale = self._losses(state, batch, rng)
        ae_params, disc_params = state["params"]["ae"], state["params"]["disc"]
        # One forward pass, two backward passes: the adaptive weight compares the gradients of
        # the NLL and of the adversarial loss at the decoder's last layer (Esser et al. 2021,
        # eq. 7).
        (nll, adv), vjp, aux = jax.vjp(generator_losses, ae_params, has_aux=True)
        (g_nll,) = vjp((jnp.ones_like(nll), jnp.zeros_like(adv)))
        (g_adv,) = vjp((jnp.zeros_like(nll), jnp.ones_like(adv)))
        weight = lc.disc_weight * losses.adaptive_weight(_last_layer(g_nll), _last_layer(g_adv))
        grads = jax.tree.map(lambda a, b: a + weight * b, g_nll, g_adv)

        x, fake = batch["image"], jax.lax.stop_gradient(aux["x_hat"])

        def disc_loss(dp):
            return losses.hinge_d_loss(self.disc.apply(dp, x), self.disc.apply(dp, fake))

        d_loss, d_grads = jax.value_and_grad(disc_loss)(disc_params)
        updates, disc_opt = self.disc_tx.update(d_grads, state["opt_state"]["disc"], disc_params)
        disc = optax.apply_updates(disc_params, updates)
        metrics = {"nll": nll, "g_adv": adv, "d_loss": d_loss, "adaptive_weight": weight}
        return self._apply(
            state, grads, disc, disc_opt, {**metrics, **_scalars(aux), "kl_scale": kl_scale}
        )

    def _apply(self, state, grads, disc, disc_opt, metrics):
        ae_params = state["params"]["ae"]
        updates, opt = self.tx.update(grads, state["opt_state"]["ae"], ae_params)
        ae = optax.apply_updates(ae_params, updates)
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
        metrics["param_norm"] = optax.tree.norm(ae)
        new_state = {
            "step": state["step"] + 1,
            "params": {"ae": ae, "disc": disc},
            "opt_state": {"ae": opt, "disc": disc_opt},
        }
        return new_state, metrics

    def phase(self, step: int) -> str:
        return "adversarial" if step >= self.config.loss.disc_start else "reconstruction"

    def reconstruct(self, ae_params, images: jax.Array) -> jax.Array:
        """Deterministic reconstruction through the posterior mean."""
        x_hat, _ = self.ae.apply(ae_params, images, sample=False)
        return jnp.clip(x_hat, -1.0, 1.0)


def _scalars(aux: dict[str, Any]) -> dict[str, jax.Array]:
    return {k: v for k, v in aux.items() if jnp.ndim(v) == 0}


def psnr(x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-image PSNR in dB for images in [-1, 1] (peak-to-peak 2). [B, H, W, C] -> [B]."""
    mse = jnp.mean(jnp.square(x - y), axis=tuple(range(1, x.ndim)))
    return 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))


def make_task(config, mesh, eval_images: Any | None = None) -> loop.Task:
    stage = AutoencoderStage(config)
    evaluate = None
    if eval_images is not None:
        recon = jax.jit(stage.reconstruct)

        # Replicated over the mesh, so the same program runs on every process of a pod.
        x = jax.device_put(np.asarray(eval_images), mesh_lib.replicated(mesh))

        def evaluate(state, step):
            del step
            return {"test_psnr": float(jnp.mean(psnr(x, recon(state["params"]["ae"], x))))}

    return loop.Task(
        name="ae",
        init_state=stage.init_state,
        train_steps={
            "reconstruction": stage.reconstruction_step,
            "adversarial": stage.adversarial_step,
        },
        frozen={},
        frozen_shardings={},
        evaluate=evaluate,
        phase=stage.phase,
    )


def load_autoencoder(workdir: str | Path, mesh) -> tuple[Any, AutoencoderStage, Any]:
    """Restores a trained stage-1 run: (config, stage, autoencoder params on ``mesh``)."""
    workdir = Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.exists():
        raise WorkdirError(f"no stage-1 run at {workdir} (missing config.json); train it first")
    config = from_json(config_path.read_text())
    if config.stage != "ae":
        raise WorkdirError(f"{workdir} holds a '{config.stage}' run, not an autoencoder")
    stage = AutoencoderStage(config)
    state = loop.restore_latest(workdir, stage.init_state, config, mesh)
    return config, stage, state["params"]["ae"]
