"""``latentjax export``: a training run -> an inference checkpoint.

The inference checkpoint holds only what sampling reads: the EMA parameters of a stage-2 run
(``ema_params``) or the autoencoder of a stage-1 run (``params.ae``; stage 1 keeps no EMA),
written with Orbax's StandardSave under ``OUT/params``, beside the run's ``config.json`` (and
``latent_stats.json``) and ``export.json`` naming the saved entries. No optimiser state, no
discriminator, no data iterator: a fraction of the run's size. ``load_generator`` and
``load_autoencoder`` read it like a run directory (``loop.restore_latest`` sees
``export.json``). A stage-2 export still names its stage-1 run in ``config.json``
(``ae_workdir``); pass an exported stage-1 directory there to sample from exports alone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from latentjax.config import from_json
from latentjax.errors import WorkdirError
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import loop

# What each stage exports (dotted keys into the training state).
EXPORTED = {"dit": ["ema_params"], "ae": ["params.ae"]}


def _init_state(config):
    if config.stage == "ae":
        from latentjax.train.autoencoder import AutoencoderStage

        return AutoencoderStage(config).init_state
    from latentjax.train.autoencoder import AutoencoderStage
    from latentjax.train.dit import DiTStage

    ae_config = from_json((Path(config.ae_workdir) / "config.json").read_text())
    return DiTStage(config, AutoencoderStage(ae_config)).init_state


def export_run(workdir: str | Path, out: str | Path) -> Path:
    """Writes the inference checkpoint of the run in ``workdir`` to ``out``; returns ``out``."""
    workdir, out = Path(workdir), Path(out).absolute()
    if not (workdir / "config.json").exists():
        raise WorkdirError(f"no run at {workdir} (missing config.json)")
    if (workdir / loop.EXPORT_FILE).exists():
        raise WorkdirError(f"{workdir} is already an exported checkpoint")
    if out.exists() and any(out.iterdir()):
        raise WorkdirError(f"--out {out} exists and is not empty")
    config = from_json((workdir / "config.json").read_text())
    if config.stage not in EXPORTED:
        raise WorkdirError(f"{workdir} holds a '{config.stage}' run; cannot export it")
    if config.stage == "dit" and not (Path(config.ae_workdir) / "config.json").exists():
        raise WorkdirError(f"the stage-1 run {config.ae_workdir} of {workdir} is missing")
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    state = loop.restore_latest(workdir, _init_state(config), config, mesh)
    keys = EXPORTED[config.stage]
    step = int(jax.device_get(state["step"]))
    out.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(out / "params", loop.select(state, keys))
        checkpointer.wait_until_finished()
    if jax.process_index() == 0:
        shutil.copy(workdir / "config.json", out / "config.json")
        for extra in ("latent_stats.json",):
            if (workdir / extra).exists():
                shutil.copy(workdir / extra, out / extra)
        info = {"keys": keys, "step": step, "source": str(workdir.absolute())}
        (out / loop.EXPORT_FILE).write_text(json.dumps(info, indent=2))
    return out
