"""``latentjax export``: a training run -> an inference checkpoint.

The inference checkpoint holds only what sampling reads: the EMA parameters of a stage-2 run
(``ema_params``) or the autoencoder of a stage-1 run (``params.ae``; stage 1 keeps no EMA),
written with Orbax's StandardSave under ``OUT/params``, beside the run's ``config.json`` (and
``latent_stats.json``) and ``export.json`` naming the saved entries. No optimiser state, no
discriminator, no data iterator: a fraction of the run's size. Every reader of runs
(``latentjax.run.Run``, ``latentjax.train.state.restore``) reads it like a run directory. A
stage-2 export still names its stage-1 run in ``config.json`` (``ae_workdir``); pass an
exported stage-1 directory there to sample from exports alone.
"""

from __future__ import annotations

import jax
import orbax.checkpoint as ocp

from latentjax import run as run_lib
from latentjax.errors import WorkdirError
from latentjax.factory import stage2_latent_shape
from latentjax.parallel import mesh as mesh_lib
from latentjax.paths import Path, absolute
from latentjax.run import Run
from latentjax.train import state as state_lib
from latentjax.train.autoencoder import AutoencoderStage
from latentjax.train.dit import DiTStage

# What each stage exports (dotted keys into the training state).
EXPORTED = {"dit": ["ema_params"], "ae": ["params.ae"]}


def init_state(run: Run):
    """The ``init_state`` of the stage that trained ``run`` (for its state's layout)."""
    if run.stage == "ae":
        return AutoencoderStage(run.config).init_state
    ae_run = run.ae_run()
    ae = AutoencoderStage(ae_run.config).ae
    return DiTStage(run.config, ae, stage2_latent_shape(run.config, ae_run.config)).init_state


def export_run(workdir: str | Path, out: str | Path, step: int | None = None) -> Path:
    """Writes the inference checkpoint of the run in ``workdir`` to ``out`` (its latest
    checkpoint, or the kept one of ``step``); returns ``out``."""
    run, out = Run.open(workdir), absolute(out)
    if run.is_export:
        raise WorkdirError(f"{workdir} is already an exported checkpoint")
    if out.exists() and any(out.iterdir()):
        raise WorkdirError(f"--out {out} exists and is not empty")
    if run.stage not in EXPORTED:
        raise WorkdirError(f"{workdir} holds a '{run.stage}' run; cannot export it")
    mesh = mesh_lib.make_mesh(run.config.mesh.shape)
    state = state_lib.restore(run, init_state(run), mesh, step)
    keys = EXPORTED[run.stage]
    step = int(jax.device_get(state["step"]))
    out.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(out / run_lib.PARAMS_DIR, state_lib.select(state, keys))
        checkpointer.wait_until_finished()
    if jax.process_index() == 0:
        (out / run_lib.CONFIG_FILE).write_bytes((run.path / run_lib.CONFIG_FILE).read_bytes())
        if run.latent_stats() is not None:
            stats = (run.path / run_lib.LATENT_STATS_FILE).read_bytes()
            (out / run_lib.LATENT_STATS_FILE).write_bytes(stats)
        info = {"keys": keys, "step": step, "source": str(absolute(run.path))}
        run_lib.write_json(out / run_lib.EXPORT_FILE, info)
    return out
