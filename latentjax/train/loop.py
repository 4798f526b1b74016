"""The training loop shared by both stages.

A stage is described by a :class:`Task`: how to build its state, its pure step function, its data
and what to do on evaluation steps. The loop owns every effect: mesh, sharded initialisation,
checkpoint/resume, metrics, progress. ``train_step(state, frozen, batch, rng) -> (state, metrics)``
is jitted once with explicit shardings and the state donated; its randomness is
``fold_in(rng, step)`` so a resumed run draws the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from latentjax import config as config_lib
from latentjax.errors import NonFiniteError, WorkdirError
from latentjax.parallel import mesh as mesh_lib
from latentjax.train.checkpoint import Checkpointer, abstract_like

# Metrics shown beside the progress bar when a stage reports them.
PROGRESS_KEYS = ("loss", "rec", "kl", "d_loss", "test_psnr")


@dataclasses.dataclass
class Task:
    """What the loop needs from a stage."""

    name: str
    # rng -> state pytree with nn.Partitioned leaves (logical axis names); evaluated abstractly.
    init_state: Callable[[jax.Array], Any]
    # Pure steps (state, frozen, batch, rng) -> (state, metrics), one per training phase.
    train_steps: dict[str, Callable[..., tuple[Any, dict[str, jax.Array]]]]
    # Pytree of arrays the step reads but never updates (e.g. the frozen stage-1 encoder).
    frozen: Any
    frozen_shardings: Any
    # Called on evaluation steps with the device state; returns extra metrics.
    evaluate: Callable[[Any, int], dict[str, float]] | None = None
    # Which of ``train_steps`` runs at a given step (0-based count of updates done). A phase
    # switch on the host, not ``lax.cond`` in the step: XLA:CPU runs a backward pass inside a
    # conditional about 10x slower than the same pass outside one.
    phase: Callable[[int], str] | None = None

    def step_for(self, step: int) -> str:
        return self.phase(step) if self.phase is not None else next(iter(self.train_steps))


def prepare_workdir(workdir: str | Path, config) -> Path:
    """Creates ``workdir`` or checks that the run it holds is the same model and stage."""
    workdir = Path(workdir)
    saved = workdir / "config.json"
    if saved.exists():
        old = config_lib.from_json(saved.read_text())
        for key in ("stage", "model"):
            before, now = _plain(old.get(key)), _plain(config.get(key))
            if key in old and before != now:
                diff = _first_difference(before, now, key)
                raise WorkdirError(
                    f"workdir {workdir} holds a different run ({diff}); "
                    "use a new --workdir or the config it was started with"
                )
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        saved.write_text(config_lib.to_json(config))
    return workdir


def _plain(x: Any) -> Any:
    """A config node as plain Python (ConfigDict equality also compares lock state and types)."""
    return json.loads(config_lib.to_json(x)) if hasattr(x, "to_dict") else x


def _first_difference(a: Any, b: Any, path: str) -> str:
    if hasattr(a, "keys") and hasattr(b, "keys"):
        for k in sorted(set(a.keys()) | set(b.keys())):
            if k not in a or k not in b or a[k] != b[k]:
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}")
    return f"{path}: saved {a!r}, now {b!r}"


class MetricsWriter:
    """Appends one JSON object per line to ``metrics.jsonl`` (process 0 only)."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        self.active = jax.process_index() == 0
        if self.active and path.exists():
            # Drop lines logged after the checkpoint we resume from: they will be logged again.
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= resume_step]
            path.write_text("".join(ln + "\n" for ln in kept))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if self.active:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")


def build_state(task: Task, mesh: Mesh, rules, rng: jax.Array):
    """Abstract state, its shardings, and a jitted initialiser that materialises each array
    directly in its shard (nothing is built on one device first)."""
    boxed = jax.eval_shape(task.init_state, rng)
    shardings = mesh_lib.logical_shardings(boxed, mesh, rules)
    abstract = abstract_like(nn.unbox(boxed), shardings)
    init = jax.jit(lambda r: nn.unbox(task.init_state(r)), out_shardings=shardings)
    return abstract, shardings, init


def restore_latest(workdir: str | Path, init_state: Callable, config, mesh: Mesh) -> Any:
    """The latest checkpointed state of the run in ``workdir``, placed on ``mesh`` by the run's
    own rules (used to load a finished run for sampling or as a frozen stage)."""
    checkpointer = Checkpointer(Path(workdir) / "checkpoints")
    try:
        if checkpointer.latest_step() is None:
            raise WorkdirError(f"run {workdir} has no checkpoint; train it first")
        rules = tuple(tuple(r) for r in config.mesh.rules)
        task = Task("restore", init_state, {}, {}, {})
        abstract, _, _ = build_state(task, mesh, rules, jax.random.key(0))
        return checkpointer.restore(abstract)
    finally:
        checkpointer.close()


def jit_steps(task: Task, shardings, mesh: Mesh) -> dict[str, Callable]:
    """Each phase's step jitted with explicit shardings and the state donated (compiled on
    first use)."""
    repl = mesh_lib.replicated(mesh)
    return {
        name: jax.jit(
            fn,
            in_shardings=(shardings, task.frozen_shardings, mesh_lib.batch_sharding(mesh), repl),
            out_shardings=(shardings, repl),
            donate_argnums=(0,),
        )
        for name, fn in task.train_steps.items()
    }


def run(
    task: Task,
    config,
    workdir: str | Path,
    data_iterator: Iterator[dict[str, np.ndarray]],
    mesh: Mesh,
    *,
    progress: bool = True,
) -> Any:
    """Trains ``task`` to ``config.train.num_steps``, resuming from ``workdir`` if it holds a
    checkpoint. Returns the final (device) state."""
    workdir = Path(workdir)
    rules = tuple(tuple(r) for r in config.mesh.rules)
    rng = jax.random.key(config.seed)
    init_rng, step_rng = jax.random.split(rng)
    abstract, shardings, init = build_state(task, mesh, rules, init_rng)

    checkpointer = Checkpointer(workdir / "checkpoints", max_to_keep=config.train.keep_checkpoints)
    start = checkpointer.latest_step()
    if start is None:
        state, start = init(init_rng), 0
    else:
        state = checkpointer.restore(abstract, data_iterator)
        if int(jax.device_get(state["step"])) != start:
            raise WorkdirError(f"checkpoint {start} in {workdir} holds a different step counter")
    writer = MetricsWriter(workdir / "metrics.jsonl", start)

    step_fns = jit_steps(task, shardings, mesh)

    num_steps = config.train.num_steps
    log_every, ckpt_every = config.train.log_every, config.train.checkpoint_every
    bar = tqdm(
        total=num_steps,
        initial=start,
        desc=f"train {task.name}",
        disable=not progress or jax.process_index() != 0,
        dynamic_ncols=True,
    )
    last_good = start if start else None
    try:
        for step in range(start + 1, num_steps + 1):
            batch = mesh_lib.global_batch(next(data_iterator), mesh)
            step_fn = step_fns[task.step_for(step - 1)]
            state, metrics = step_fn(state, task.frozen, batch, step_rng)
            bar.update(1)
            is_last = step == num_steps
            if step % log_every == 0 or is_last or step % ckpt_every == 0:
                host = {k: float(v) for k, v in jax.device_get(metrics).items()}
                bad = [k for k, v in host.items() if not math.isfinite(v)]
                if bad:
                    where = f"step {last_good}" if last_good else "none yet"
                    raise NonFiniteError(
                        f"non-finite {', '.join(bad)} at step {step} (logged every {log_every}); "
                        f"last good checkpoint: {where} in {workdir / 'checkpoints'}"
                    )
                if task.evaluate is not None and (step % config.train.eval_every == 0 or is_last):
                    host.update(task.evaluate(state, step))
                writer.write(step, host)
                bar.set_postfix({k: f"{host[k]:.4g}" for k in PROGRESS_KEYS if k in host})
            if step % ckpt_every == 0 or is_last:
                checkpointer.save(step, state, data_iterator)
                last_good = step
    finally:
        bar.close()
        checkpointer.wait()
        checkpointer.close()
    return state
