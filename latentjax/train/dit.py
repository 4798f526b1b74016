"""Stage 2: a class-conditional DiT trained on latents of the frozen stage-1 encoder.

Latents are normalised as ``(z - shift) * scale`` with ``shift``/``scale`` measured once on the
training set (the mean and 1/std of posterior samples, as Stable Diffusion's ``scaling_factor``
and SD3/Flux's ``shift_factor``), saved to ``WORKDIR/latent_stats.json`` and reused on resume
and at sampling time. ``shift`` and ``scale`` may also be per-channel lists (a converted DiT
sampling through an autoencoder with SDXL-style ``latents_mean``/``latents_std``, or Wan's):
they broadcast over the channel (last) axis. Labels are replaced by the null class with
probability ``label_drop`` so one network learns the conditional and unconditional models used
by classifier-free guidance (Ho & Salimans 2022); a DiT without the null class
(``model.null_class=False``, e.g. a converted checkpoint trained without label dropout) drops
none. An EMA of the weights is kept in the state; sampling uses it.

REPA (``repa.weight`` > 0, Yu et al. 2025) adds ``weight`` times the alignment loss of the
DiT's projected hidden state after ``repa.depth`` blocks with a frozen encoder's patch features
of the clean images (resampled to the DiT's token grid), from the same forward pass as the
diffusion loss. The encoder's parameters are a frozen input of the step, replicated like the
autoencoder's; its features are computed in the step (not cached).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from latentjax.data.latents import latent_stats
from latentjax.data.normalization import denormalize, latent_moments, normalize
from latentjax.diffusion import paths as paths_lib
from latentjax.diffusion.samplers import SAMPLERS
from latentjax.diffusion.samplers import sample as sample_latents
from latentjax.errors import ConfigError, WorkdirError
from latentjax.eval.images import enlarge, image_grid
from latentjax.factory import build_dit
from latentjax.losses.diffusion import T_SAMPLINGS, WEIGHTINGS, diffusion_loss
from latentjax.losses.representation import repa_loss
from latentjax.models import representation
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import state as state_lib
from latentjax.train.frozen_encoder import FrozenEncoder


def ema_decay(step: jax.Array, decay: float) -> jax.Array:
    """EMA decay with warm-up, min(decay, (1 + n) / (10 + n)), so early averages are not
    dominated by the random initialisation (as in TensorFlow's ExponentialMovingAverage)."""
    n = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


LR_SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(o, num_steps: int) -> optax.Schedule:
    """``optim.schedule``: a linear warm-up from 0 to ``optim.lr`` over ``optim.warmup_steps``,
    then the rate held ("constant", DiT's and SiT's recipe) or brought down along a half cosine
    to 0 at ``num_steps`` ("cosine", Loshchilov & Hutter 2017). A cosine run extended by a
    resume follows the schedule of its new length from the step it resumes at."""
    warmup = max(o.warmup_steps, 1)
    if o.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, o.lr, warmup, max(num_steps, warmup + 1))
    return optax.linear_schedule(0.0, o.lr, warmup)


def check_diffusion_config(config) -> None:
    """One-line errors naming the key for a misspelt choice, before anything is traced."""
    d, smp = config.diffusion, config.sample
    choices = {
        "diffusion.path": (d.path, paths_lib.PATHS),
        "diffusion.prediction": (d.prediction, paths_lib.PREDICTIONS),
        "diffusion.t_sampling": (d.t_sampling, T_SAMPLINGS),
        "diffusion.loss_weighting": (d.loss_weighting, WEIGHTINGS),
        "sample.sampler": (smp.sampler, SAMPLERS),
        "optim.schedule": (config.optim.schedule, LR_SCHEDULES),
    }
    for key, (value, known) in choices.items():
        if value not in known:
            raise ConfigError(f"{key}={value!r}; use one of {', '.join(known)}")
    if config.model.num_classes and not config.model.null_class and d.label_drop > 0:
        raise ConfigError(
            f"diffusion.label_drop={d.label_drop} needs the null class: model.null_class is "
            "False (a DiT without label dropout); set diffusion.label_drop=0"
        )
    if not (math.isfinite(d.time_shift) and d.time_shift > 0):
        raise ConfigError(f"diffusion.time_shift={d.time_shift} must be a number > 0 (1 = off)")
    if smp.guidance_channels < 0:
        raise ConfigError(f"sample.guidance_channels={smp.guidance_channels}; use 0 (all) or more")
    r = config.repa
    if r.weight < 0:
        raise ConfigError(f"repa.weight={r.weight} must be >= 0")
    if r.weight > 0:
        if not 1 <= r.depth <= config.model.depth:
            raise ConfigError(f"repa.depth={r.depth}; use 1 .. model.depth={config.model.depth}")
        if r.encoder not in representation.ENCODERS:
            raise ConfigError(
                f"repa.encoder={r.encoder!r}; use one of {', '.join(representation.ENCODERS)}"
            )
        if config.data.latent_cache:
            raise ConfigError(
                "repa.weight > 0 needs the images (the frozen encoder sees them): set "
                "data.latent_cache='' to encode on the fly"
            )


class DiTStage:
    """The stage-2 network, optimiser and pure step of a config, over the latents of a frozen
    stage-1 network ``ae`` (anything with ``apply(params, images, method=ae.encode)`` returning
    a posterior) of shape ``latent_shape``: (h, w, c) of images, or (t, h, w, c) of a video
    autoencoder's clips (batches then hold ``"video"`` [B, T, H, W, C] for ``"image"``, and the
    network is the video DiT)."""

    def __init__(
        self,
        config,
        ae,
        latent_shape: tuple[int, int, int],
        repa_encoder: FrozenEncoder | None = None,
    ):
        """``repa_encoder``: REPA's frozen encoder; None reads the one ``config.repa`` names
        (when REPA is on)."""
        check_diffusion_config(config)
        self.config, self.ae, self.latent_shape = config, ae, tuple(latent_shape)
        self.video = len(self.latent_shape) == 4
        self.key = "video" if self.video else "image"
        if self.video and config.repa.weight > 0:
            raise ConfigError("repa.weight > 0: REPA is not built for video latents; set 0")
        self.dit = build_dit(config.model, self.latent_shape)
        self._repa_encoder = repa_encoder
        if config.repa.weight > 0:
            if not config.repa.feature_dim:  # recorded in the run's config when it starts
                config.repa.feature_dim = self.repa_encoder.dim
            self.dit = self.dit.clone(
                repa_depth=config.repa.depth,
                repa_projector_dim=config.repa.projector_dim,
                repa_feature_dim=config.repa.feature_dim,
            )
        o = config.optim
        tx = optax.adamw(
            learning_rate_schedule(o, config.train.num_steps),
            b1=0.9,
            b2=0.999,
            weight_decay=o.weight_decay,
        )
        if o.grad_clip:
            tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), tx)
        self.tx = tx

    @property
    def null_label(self) -> int:
        return self.config.model.num_classes

    @property
    def repa_encoder(self) -> FrozenEncoder:
        """REPA's frozen encoder, read from ``config.repa`` on first use (training only)."""
        if self._repa_encoder is None:
            r = self.config.repa
            self._repa_encoder = FrozenEncoder.load(
                r.encoder, r.encoder_weights, "repa.", r.encoder_size, r.encoder_heads, r.vgg_tap
            )
            if r.feature_dim and self._repa_encoder.dim != r.feature_dim:
                raise ConfigError(
                    f"repa.feature_dim={r.feature_dim} but the encoder's features are "
                    f"{self._repa_encoder.dim} wide"
                )
        return self._repa_encoder

    @property
    def uses_repa(self) -> bool:
        return self.config.repa.weight > 0

    def apply(self, params, x, t, y, **kwargs):
        return self.dit.apply(params, x, t, y, **kwargs)

    def init_state(self, rng: jax.Array) -> dict[str, Any]:
        z = jnp.zeros((1, *self.latent_shape), jnp.float32)
        params = self.dit.init(
            rng, z, jnp.zeros((1,)), jnp.zeros((1,), jnp.int32), return_repa=self.uses_repa
        )
        return {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "opt_state": self.tx.init(params),
            "ema_params": params,
        }

    def encode(self, frozen, images: jax.Array, rng: jax.Array) -> jax.Array:
        """Normalised latents of a sample from the frozen encoder's posterior."""
        posterior = self.ae.apply(frozen["ae"], images, method=self.ae.encode)
        z = posterior.sample(rng)
        return normalize(z, frozen["latent_shift"], frozen["latent_scale"])

    def latents(self, frozen, batch, rng: jax.Array) -> jax.Array:
        """Normalised latents of ``batch``: from its images through the frozen encoder, or,
        for a batch of the latent cache (``latentjax encode``), a fresh posterior sample
        ``mean + std * eps`` of the cached moments, the same distribution as ``encode``."""
        if "mean" not in batch:
            return self.encode(frozen, batch[self.key], rng)
        eps = jax.random.normal(rng, batch["mean"].shape, batch["mean"].dtype)
        z = batch["mean"] + batch["std"] * eps
        return normalize(z, frozen["latent_shift"], frozen["latent_scale"])

    def train_step(self, state, frozen, batch, rng):
        c = self.config
        step = state["step"]
        rng = jax.random.fold_in(rng, step)
        enc_rng, drop_rng, loss_rng = jax.random.split(rng, 3)
        z = jax.lax.stop_gradient(self.latents(frozen, batch, enc_rng))
        labels = batch["label"].astype(jnp.int32)
        if c.model.num_classes and c.model.null_class:
            drop = jax.random.bernoulli(drop_rng, c.diffusion.label_drop, labels.shape)
            labels = jnp.where(drop, self.null_label, labels)

        features = None
        if self.uses_repa:
            # The frozen encoder's patch features of the clean images, on the DiT's token grid
            # (the latent side over the patch size): [B, N, D], constants of the step.
            grid = self.latent_shape[0] // c.model.patch_size
            f = self.repa_encoder.features(frozen["repa"], batch["image"])
            f = representation.to_grid(f, grid)
            features = jax.lax.stop_gradient(f.reshape(f.shape[0], grid * grid, f.shape[-1]))

        def loss_fn(params):
            captured = {}

            def apply(p, x, t, y):
                """The network of the diffusion loss; with REPA, the same forward pass also
                gives the projected hidden state, kept for the alignment loss."""
                if features is None:
                    return self.apply(p, x, t, y)
                out, captured["projected"] = self.apply(p, x, t, y, return_repa=True)
                return out

            loss, aux = diffusion_loss(
                apply,
                params,
                z,
                labels,
                loss_rng,
                path=c.diffusion.path,
                prediction=c.diffusion.prediction,
                t_sampling=c.diffusion.t_sampling,
                weighting=c.diffusion.loss_weighting,
                min_snr_gamma=c.diffusion.min_snr_gamma,
                time_shift=c.diffusion.time_shift,
            )
            aux = {"loss": loss}
            if features is not None:
                aux["repa"] = repa_loss(captured["projected"], features)
                loss = loss + c.repa.weight * aux["repa"]
            return loss, aux

        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        decay = ema_decay(step, c.optim.ema_decay)
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema_params"], params)
        metrics = {
            **aux,  # "loss": the diffusion loss; with REPA, "repa": minus the mean cosine
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(params),
            "ema_decay": decay,
        }
        new_state = {"step": step + 1, "params": params, "opt_state": opt_state, "ema_params": ema}
        return new_state, metrics


def measure_latent_stats(
    ae, ae_params, batches, mesh, seed: int = 0, key: str = "image"
) -> dict[str, Any]:
    """The latent normalisation (``latentjax.data.latents.latent_stats``) of posterior samples
    of the frozen encoder over ``batches`` (host dicts with ``key``: "image", or "video" for
    clips, whose latent frames all count)."""
    rng = jax.random.key(seed)

    @jax.jit
    def moments(params, images, rng):
        posterior = ae.apply(params, images, method=ae.encode)
        return latent_moments(posterior.sample(rng), posterior.mean)

    def per_batch():
        for i, local in enumerate(batches):
            batch = mesh_lib.global_batch({key: local[key]}, mesh)
            yield jax.device_get(moments(ae_params, batch[key], jax.random.fold_in(rng, i)))

    return latent_stats(per_batch())


def latent_normalisation(stats: dict[str, Any], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) of ``latent_stats.json`` as float32 arrays: each a number (shape ()) or
    one value per latent channel (shape [channels]); anything else is a one-line error."""
    out = []
    for key in ("shift", "scale"):
        value = np.asarray(stats[key], np.float32)
        if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != channels):
            raise WorkdirError(
                f"latent statistics: {key} has shape {value.shape}; it must be a number or "
                f"{channels} values (one per latent channel)"
            )
        out.append(value)
    return out[0], out[1]


def frozen_inputs(
    ae_params, stats: dict[str, Any], mesh, channels: int | None = None
) -> tuple[dict, dict]:
    """The frozen inputs of the step and the sampler: the autoencoder's parameters and the latent
    shift and scale (numbers or per-channel vectors; checked against ``channels`` if given)."""
    if channels is None:
        channels = np.size(stats["shift"])
    shift, scale = latent_normalisation(stats, channels)
    repl = mesh_lib.replicated(mesh)
    frozen = {
        "ae": ae_params,
        "latent_shift": jax.device_put(shift, repl),
        "latent_scale": jax.device_put(scale, repl),
    }
    return frozen, jax.tree.map(lambda a: a.sharding, frozen)


def sample_sheet(stage: DiTStage, frozen, mesh, count: int, seed: int):
    """-> ``images(state, step)``: a grid of ``count`` samples of the EMA weights from noise and
    labels fixed once (labels 0, 1, 2, ... cycling over the classes, a row per cycle), decoded
    by the frozen stage 1 with the config's sampler, steps and guidance: the same inputs at
    every evaluation, so the grids show the model's progress and nothing else."""
    c, smp = stage.config, stage.config.sample
    classes = c.model.num_classes
    labels = np.arange(count, dtype=np.int32) % max(classes, 1)
    guided = bool(classes and c.model.null_class and smp.cfg_scale != 1.0)
    key = jax.random.key(seed)
    repl = mesh_lib.replicated(mesh)
    inputs = jax.device_put(
        (
            jax.random.normal(jax.random.fold_in(key, 0), (count, *stage.latent_shape)),
            labels,
            jax.random.split(jax.random.fold_in(key, 1), count),
        ),
        repl,
    )

    def run(ema_params, frozen, noise, labels, keys):
        z = sample_latents(
            stage.apply,
            ema_params,
            noise,
            labels,
            path=c.diffusion.path,
            prediction=c.diffusion.prediction,
            num_steps=smp.num_steps,
            sampler=smp.sampler,
            keys=keys,
            eta=smp.eta,
            cfg_scale=smp.cfg_scale,
            null_label=stage.null_label if guided else None,
            guided=guided,
            guidance_interval=tuple(smp.guidance_interval),
            guidance_channels=smp.guidance_channels if guided else 0,
            time_shift=c.diffusion.time_shift,
        )
        z = denormalize(z, frozen["latent_shift"], frozen["latent_scale"])
        x = stage.ae.apply(frozen["ae"], z, method=stage.ae.decode)
        return jnp.round((jnp.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)

    # Replicated output: every process runs it, process 0 writes what it gets.
    program = jax.jit(run, out_shardings=repl)

    def images(state, step):
        del step
        pixels = np.asarray(jax.device_get(program(state["ema_params"], frozen, *inputs)))
        if pixels.shape[-1] == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
        if stage.video:  # a row of frames per clip
            frames = pixels.shape[1]
            grid = image_grid(pixels.reshape(-1, *pixels.shape[2:])[..., :3], ncol=frames)
            return {"eval/samples": enlarge(grid, size=pixels.shape[2])}
        grid = image_grid(pixels[..., :3], ncol=min(classes, count) or None)
        return {"eval/samples": enlarge(grid, size=pixels.shape[1])}

    return images


def make_task(stage: DiTStage, ae_params, stats: dict[str, Any], mesh) -> state_lib.Task:
    frozen, frozen_shardings = frozen_inputs(ae_params, stats, mesh, stage.latent_shape[-1])
    count = stage.config.train.eval_images
    if stage.uses_repa:
        repl = mesh_lib.replicated(mesh)
        frozen["repa"] = jax.device_put(stage.repa_encoder.variables, repl)
        frozen_shardings["repa"] = jax.tree.map(lambda _: repl, frozen["repa"])
    return state_lib.Task(
        name="dit",
        init_state=stage.init_state,
        train_steps={"diffusion": stage.train_step},
        frozen=frozen,
        frozen_shardings=frozen_shardings,
        images=sample_sheet(stage, frozen, mesh, count, stage.config.seed) if count else None,
    )
