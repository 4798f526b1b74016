"""Converted weights as an inference checkpoint: the directory ``latentjax export`` writes
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
``latentjax export`` saves ``loop.select(state, keys)``, so ``loop.restore_latest`` reads them.

Latent normalisation: a converted autoencoder's ``latent_stats.json`` holds diffusers'
``scaling_factor`` / ``shift_factor`` as ``{"shift", "scale"}``, latentjax's ``(z - shift) *
scale``. ``convert dit --ae AE_DIR`` copies them beside the DiT, where ``sample`` reads them: the
original DiT checkpoints were trained on SD's VAE latents times 0.18215, shift 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from latentjax import config as config_lib
from latentjax.convert.common import ConvertError, flatten, unflatten
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import loop

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
)


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
    config = config_lib.load_config(path)
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
    out = Path(out).absolute()
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    rules = tuple(tuple(r) for r in config.mesh.rules)
    task = loop.Task("convert", init_state, {}, {}, {})
    abstract, _, _ = loop.build_state(task, mesh, rules, jax.random.key(0))
    want, got = flatten(loop.select(abstract, keys)), flatten(tree)
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
        checkpointer.save(out / "params", placed, force=True)  # a new conversion replaces it
        checkpointer.wait_until_finished()
    if jax.process_index() == 0:
        (out / "config.json").write_text(config_lib.to_json(config))
        info = {"keys": keys, "step": 0, "source": source, "converted": True}
        (out / loop.EXPORT_FILE).write_text(json.dumps(info, indent=2))


def write_autoencoder(
    out: str | Path,
    converted: ml_collections.ConfigDict,
    params: dict,
    base: str | None = None,
    overrides: Sequence[str] = (),
) -> ml_collections.ConfigDict:
    """A converted autoencoder (``load_diffusers_autoencoder``'s config and params) as a
    stage-1 inference checkpoint in ``out``; -> its run config."""
    from latentjax.train.autoencoder import AutoencoderStage
    from latentjax.train.dit import write_latent_stats
    from latentjax.train.export import EXPORTED

    config = run_config("ae", converted.model, base, overrides)
    stage = AutoencoderStage(config)
    save_checkpoint(
        out, config, stage.init_state, {"params": {"ae": params}}, EXPORTED["ae"], converted.source
    )
    stats = converted.latent_stats
    write_latent_stats(
        out,
        {"shift": stats.shift, "scale": stats.scale, "source": "diffusers shift/scaling_factor"},
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
    from latentjax.train.autoencoder import AutoencoderStage
    from latentjax.train.dit import DiTStage, build_dit, read_latent_stats, write_latent_stats
    from latentjax.train.export import EXPORTED

    m = converted.model
    config = run_config("dit", {k: m[k] for k in DIT_MODEL_KEYS}, base, overrides)
    stats = None
    if ae_dir is None:
        config.ae_workdir = ""
        dit = build_dit(config.model, m.input_size, m.in_channels)

        def init_state(rng):  # DiTStage.init_state's ema_params, without a stage 1 to size it
            z = jnp.zeros((1, m.input_size, m.input_size, m.in_channels), jnp.float32)
            return {"ema_params": dit.init(rng, z, jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))}

    else:
        ae_dir = Path(ae_dir).absolute()
        ae_config = _read_stage1_config(ae_dir)
        stats = read_latent_stats(ae_dir)
        if stats is None:
            raise ConvertError(
                f"--ae {ae_dir} has no latent_stats.json; pass a directory written by "
                "`latentjax convert ae` (it holds the autoencoder's scaling factor)"
            )
        am = ae_config.model
        f = 2 ** (len(am.ch_mult) - 1)
        channels = am.embed_dim or am.z_channels
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
        init_state = DiTStage(config, AutoencoderStage(ae_config)).init_state
    save_checkpoint(
        out, config, init_state, {"ema_params": params}, EXPORTED["dit"], converted.source
    )
    if stats is not None:
        kept = {"shift": stats["shift"], "scale": stats["scale"]}
        write_latent_stats(out, {**kept, "source": str(ae_dir / "latent_stats.json")})
    elif jax.process_index() == 0:
        (Path(out) / "latent_stats.json").unlink(missing_ok=True)  # from an earlier --ae
    return config


def _read_stage1_config(ae_dir: Path) -> ml_collections.ConfigDict:
    path = ae_dir / "config.json"
    if not path.is_file():
        raise ConvertError(f"--ae {ae_dir}: no stage-1 directory there (missing config.json)")
    config = config_lib.from_json(path.read_text())
    if config.get("stage") != "ae":
        raise ConvertError(f"--ae {ae_dir} holds a '{config.get('stage')}' run, not stage 1")
    return config
