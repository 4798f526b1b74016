"""A small public API for notebooks: load an autoencoder or a DiT from whatever the user has.

    ae = latentjax.load_autoencoder("path/to/vae")   # diffusers dir, converted dir or workdir
    z = ae.encode(images)                             # [B, H, W, 3] in [-1, 1] -> posterior mean
    x = ae.decode(z)                                  # -> [B, H, W, 3]
    zn = ae.normalize(z)                              # (z - shift) * scale, for a DiT
                                                      # (shift, scale: scalars or per channel)

    dit = latentjax.load_dit("DiT-XL-2-256x256.pt")   # original .pt, diffusers dir or converted
    out = dit(x_t, t, y)                              # the network's output, [B, h, w, C(*2)]

Everything is jitted once per input shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from latentjax.config import base_config
from latentjax.convert import common, diffusers_ae
from latentjax.convert import dit as dit_convert
from latentjax.data import normalization
from latentjax.errors import LatentjaxError
from latentjax.factory import build_autoencoder, build_dit, is_video
from latentjax.models.dit import DiT
from latentjax.paths import Path, as_path
from latentjax.run import CONFIG_FILE, Run, is_run


def check_array(x, what: str, channels: int, multiple: int) -> None:
    """One-line errors for arrays the networks cannot take: NHWC, a float or integer dtype,
    ``channels`` last, sides divisible by ``multiple``."""
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is None or dtype is None:
        raise LatentjaxError(f"{what} must be an array [B, H, W, C], got {type(x).__name__}")
    if len(shape) != 4:
        hint = " (add a batch axis: x[None])" if len(shape) == 3 else ""
        raise LatentjaxError(f"{what} must be [B, H, W, C], got shape {tuple(shape)}{hint}")
    if shape[-1] != channels:
        hint = " (NCHW? transpose to NHWC)" if shape[1] == channels else ""
        raise LatentjaxError(
            f"{what} have {shape[-1]} channels last, the model takes {channels}{hint}"
        )
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise LatentjaxError(f"{what} must be numbers, got dtype {dtype}")
    if shape[1] % multiple or shape[2] % multiple:
        raise LatentjaxError(f"{what} sides {shape[1:3]} must be divisible by {multiple}")


@dataclasses.dataclass
class Autoencoder:
    """A loaded autoencoder: ``encode``/``decode`` jitted, and the latent normalisation
    ``(z - latent_shift) * latent_scale`` that a stage-2 model works in."""

    model: Any  # AutoencoderKL, DCAutoencoder or TinyAutoencoder (latentjax.factory)
    params: Any
    latent_shift: float | list[float] = 0.0  # a list: one value per latent channel
    latent_scale: float | list[float] = 1.0
    config: Any = None

    def __post_init__(self):
        model = self.model
        self._encode = jax.jit(lambda p, x: model.apply(p, x, method=model.encode).mode())
        self._decode = jax.jit(lambda p, z: model.apply(p, z, method=model.decode))

    def encode(self, images: jax.Array) -> jax.Array:
        """[B, H, W, C] float in [-1, 1] -> the posterior mean [B, H/f, W/f, latent channels]."""
        check_array(images, "images", self.model.in_channels, self.model.downsample_factor)
        lo, hi = float(jnp.min(images)), float(jnp.max(images))
        if lo < -1.5 or hi > 1.5:
            raise LatentjaxError(
                f"images range over [{lo:g}, {hi:g}]; latentjax takes images in [-1, 1] "
                "(from uint8: images / 127.5 - 1)"
            )
        return self._encode(self.params, jnp.asarray(images, jnp.float32))

    def decode(self, latents: jax.Array) -> jax.Array:
        """[B, h, w, latent channels] (unnormalised) -> images [B, h*f, w*f, C], about [-1, 1]."""
        check_array(latents, "latents", self.model.latent_channels, 1)
        return self._decode(self.params, jnp.asarray(latents, jnp.float32))

    def normalize(self, latents: jax.Array) -> jax.Array:
        """[B, h, w, c] latents -> (z - shift) * scale, the about unit-variance space a DiT
        works in; per-channel values broadcast over the last (channel) axis."""
        shift, scale = self._stats()
        return normalization.normalize(jnp.asarray(latents, jnp.float32), shift, scale)

    def denormalize(self, latents: jax.Array) -> jax.Array:
        """[B, h, w, c] normalised latents (a DiT's samples) -> z / scale + shift, what
        :meth:`decode` takes."""
        shift, scale = self._stats()
        return normalization.denormalize(jnp.asarray(latents, jnp.float32), shift, scale)

    def _stats(self) -> tuple[jax.Array, jax.Array]:
        return (
            jnp.asarray(self.latent_shift, jnp.float32),
            jnp.asarray(self.latent_scale, jnp.float32),
        )


@dataclasses.dataclass
class DiTModel:
    """A loaded DiT: ``dit(x, t, y)`` runs the network (jitted)."""

    model: DiT
    params: Any
    config: Any = None

    def __post_init__(self):
        self._apply = jax.jit(self.model.apply)

    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array) -> jax.Array:
        """x [B, H, W, C] latents, t [B] in [0, 1000), y [B] labels (``num_classes``: null)."""
        return self._apply(self.params, jnp.asarray(x, jnp.float32), jnp.asarray(t), jnp.asarray(y))


def _from_description(desc: dict) -> ml_collections.ConfigDict:
    """A converted checkpoint's config, its model section completed with the fields added since
    it was written (their defaults: the base config's)."""
    config = ml_collections.ConfigDict(desc["config"])
    base = dit_convert.model_section() if desc.get("kind") == "dit" else base_config("ae").model

    def merge(defaults: dict, given: dict) -> dict:
        out = dict(defaults)
        for key, value in given.items():
            both = isinstance(value, dict) and isinstance(defaults.get(key), dict)
            out[key] = merge(defaults[key], value) if both else value
        return out

    config.model = ml_collections.ConfigDict(merge(base.to_dict(), config.model.to_dict()))
    return config


def load_autoencoder(path: str | Path) -> Autoencoder:
    """A diffusers autoencoder directory (``AutoencoderKL``, ``VQModel``, ``AutoencoderTiny``,
    ``AutoencoderDC``; a pipeline directory is read through its ``vae/``), a directory written
    by ``latentjax convert ae``, a latentjax stage-1 training run or export, or a stage-2 run
    (its stage-1 autoencoder with the normalisation stage 2 trains in) -> :class:`Autoencoder`.
    Another diffusers class is a one-line :class:`LatentjaxError` naming it."""
    path = as_path(path)
    if (path / common.CONVERTED_FILE).exists():
        desc, params = common.load_converted(path)
        if desc.get("kind") != "autoencoder":
            raise LatentjaxError(f"{path} holds a converted {desc.get('kind')}, not an autoencoder")
        config = _from_description(desc)
    elif diffusers_ae.diffusers_class(path) is not None:
        # Whatever diffusers class it is: the converter converts it or names it in its error.
        config, params = diffusers_ae.load_diffusers_autoencoder(path)
    elif (path / CONFIG_FILE).exists():
        return _load_run_autoencoder(Run.open(path))
    else:
        raise LatentjaxError(
            f"{path} is neither a diffusers autoencoder directory, a converted checkpoint, "
            "nor a latentjax training run"
        )
    stats = config.latent_stats
    return Autoencoder(build_autoencoder(config.model), params, stats.shift, stats.scale, config)


def _load_run_autoencoder(run: Run) -> Autoencoder:
    """The autoencoder of a run directory: a stage-1 run or export (a trained one has no latent
    statistics of its own; a converted one holds its scaling factor), or the stage-1 run of a
    stage-2 run, with the normalisation that stage 2 measured and trains in."""
    from latentjax.parallel.mesh import make_mesh
    from latentjax.train.autoencoder import load_autoencoder as load_run

    ae_run = run.ae_run() if run.stage == "dit" else Run.open(run.path, stage="ae")
    if is_video(ae_run.config.model):
        raise LatentjaxError(
            f"{run.path} is a video autoencoder run; load_autoencoder takes image autoencoders "
            "(images [B, H, W, C]); a video one's API is not built yet"
        )
    stage, params = load_run(ae_run, make_mesh(ae_run.config.mesh.shape))
    stats = run.latent_stats() or {"shift": 0.0, "scale": 1.0}
    return Autoencoder(stage.ae, params, stats["shift"], stats["scale"], ae_run.config)


def _load_run_dit(run: Run) -> DiTModel:
    """The EMA weights of a stage-2 training run or of its export (what sampling uses)."""
    from latentjax.factory import stage2_latent_shape
    from latentjax.parallel.mesh import make_mesh
    from latentjax.train.dit import DiTStage
    from latentjax.train.state import restore

    stage = DiTStage(run.config, None, stage2_latent_shape(run.config, run.ae_run().config))
    state = restore(run, stage.init_state, make_mesh(run.config.mesh.shape))
    return DiTModel(stage.dit, state["ema_params"], run.config)


def load_dit(
    path: str | Path,
    num_heads: int | None = None,
    num_classes: int | None = None,
    entry: str | None = None,
) -> DiTModel:
    """An original DiT ``.pt`` state dict or ``train.py`` checkpoint, a diffusers DiT directory
    (or pipeline), a directory written by ``latentjax convert dit``, or a latentjax stage-2
    training run or its export (the EMA weights) -> :class:`DiTModel`.

    For an original file, ``num_heads`` and ``num_classes`` are required unless the file says
    them (a train.py checkpoint's ``args``): the error says which and suggests the DiT table's
    values; ``entry`` picks a train.py checkpoint's "ema" (default) or "model" weights
    (``dit.config.checkpoint_entry`` says which was taken). ``dit.config.model.null_class`` is
    False for a model trained without label dropout, which has no unconditional row."""
    path = as_path(path)
    if (path / common.CONVERTED_FILE).exists():
        desc, params = common.load_converted(path)
        if desc.get("kind") != "dit":
            raise LatentjaxError(f"{path} holds a converted {desc.get('kind')}, not a DiT")
        config = _from_description(desc)
    elif is_run(path):
        return _load_run_dit(Run.open(path, stage="dit"))
    else:
        config, params = dit_convert.load_dit(path, num_heads, num_classes, entry)
    m = config.model
    return DiTModel(build_dit(m, (m.input_size, m.input_size, m.in_channels)), params, config)
