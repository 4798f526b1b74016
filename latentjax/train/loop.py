"""The training loop shared by both stages.

A stage is described by a :class:`Task`: how to build its state, its pure step function, its data
and what to do on evaluation steps. The loop owns every effect: mesh, sharded initialisation,
checkpoint/resume, metrics, progress. ``train_step(state, frozen, batch, rng) -> (state, metrics)``
is jitted once with explicit shardings and the state donated; its randomness is
``fold_in(rng, step)`` so a resumed run draws the same numbers as an uninterrupted one.

Failures: a step whose metrics (loss, gradient norm, ...) hold NaN or Inf either stops the run,
naming the step and the last good checkpoint (``train.on_nonfinite = "stop"``), or is dropped
inside the jitted step, the state staying as it was (``"skip"``). Each step's finiteness is read
back one step late, so the host never waits for the step it just dispatched. SIGTERM (a
preempted VM), or on a multi-process run JAX's preemption sync point, saves a checkpoint and
ends the run cleanly; the next ``train`` on the same workdir resumes from it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from latentjax import config as config_lib
from latentjax.errors import ConfigError, NonFiniteError, WorkdirError
from latentjax.parallel import mesh as mesh_lib
from latentjax.train.checkpoint import Checkpointer, abstract_like

# Metrics shown beside the progress bar when a stage reports them.
PROGRESS_KEYS = ("loss", "rec", "kl", "d_loss", "test_psnr")
ON_NONFINITE = ("stop", "skip")
# Written beside a run's checkpoints by ``latentjax export``: the directory is an inference
# checkpoint (EMA parameters only) rather than a training run.
EXPORT_FILE = "export.json"


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
        # Whole or not at all: the other processes of a run read it at the same time.
        write_atomic(saved, lambda f: f.write(config_lib.to_json(config).encode()))
    return workdir


def write_atomic(path: Path, write: Callable[[Any], Any]) -> None:
    """Calls ``write`` on a binary file beside ``path`` and renames it to ``path``: a reader
    sees the old file or the new one, never a part of it."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
                # NaN/Inf (a skipped update) as null: metrics.jsonl stays strict JSON.
                clean = {k: v if math.isfinite(v) else None for k, v in metrics.items()}
                f.write(json.dumps({"step": step, **clean}) + "\n")


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
    own rules (used to load a finished run for sampling or as a frozen stage).

    ``workdir`` may also be an inference checkpoint written by ``latentjax export``; it holds
    only some entries of the state (e.g. ``ema_params``), and only those are returned.
    """
    workdir = Path(workdir)
    rules = tuple(tuple(r) for r in config.mesh.rules)
    task = Task("restore", init_state, {}, {}, {})
    abstract, _, _ = build_state(task, mesh, rules, jax.random.key(0))
    if (workdir / EXPORT_FILE).exists():
        keys = json.loads((workdir / EXPORT_FILE).read_text())["keys"]
        return restore_export(workdir, select(abstract, keys))
    checkpointer = Checkpointer(workdir / "checkpoints")
    try:
        if checkpointer.latest_step() is None:
            raise WorkdirError(f"run {workdir} has no checkpoint; train it first")
        return checkpointer.restore(abstract)
    finally:
        checkpointer.close()


def select(tree: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The entries of a nested dict at dotted ``keys`` (``"params.ae"``), nested as before."""
    out: dict[str, Any] = {}
    for key in keys:
        *parents, leaf = key.split(".")
        src, dst = tree, out
        for part in parents:
            src, dst = src[part], dst.setdefault(part, {})
        dst[leaf] = src[leaf]
    return out


def restore_export(export_dir: Path, abstract: dict[str, Any]) -> dict[str, Any]:
    """Reads an exported inference checkpoint onto ``abstract`` (its shapes and shardings)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore((Path(export_dir) / "params").absolute(), abstract)


def guard_nonfinite(step_fn: Callable, skip: bool) -> Callable:
    """``step_fn`` plus a ``nonfinite`` metric (1.0 when any metric is NaN/Inf). With ``skip``,
    such a step leaves the state as it was apart from the step counter, so the step numbering
    (and hence ``fold_in(rng, step)``) goes on as in an uninterrupted run."""

    def step(state, frozen, batch, rng):
        new_state, metrics = step_fn(state, frozen, batch, rng)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
        if skip:
            kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
            new_state = {**kept, "step": state["step"] + 1}
        return new_state, {**metrics, "nonfinite": 1.0 - finite.astype(jnp.float32)}

    return step


def jit_steps(
    task: Task, shardings, mesh: Mesh, on_nonfinite: str = "stop", *, donate: bool = True
) -> dict[str, Callable]:
    """Each phase's step jitted with explicit shardings and the state donated (unless
    ``donate=False``; compiled on first use)."""
    repl = mesh_lib.replicated(mesh)
    return {
        name: jax.jit(
            guard_nonfinite(fn, skip=on_nonfinite == "skip"),
            in_shardings=(shardings, task.frozen_shardings, mesh_lib.batch_sharding(mesh), repl),
            out_shardings=(shardings, repl),
            donate_argnums=(0,) if donate else (),
        )
        for name, fn in task.train_steps.items()
    }


class UndonatedSteps:
    """The steps that run right after a held checkpoint save (``Checkpointer.save(...,
    held=True)``): the same steps without donation, so the saved state's buffers stay intact
    while a background thread writes them. That replaces the snapshot copy of the whole state;
    on CPU devices the copy's memory traffic is the cost of a save to the loop (measured in
    ``benchmarks/checkpoint.py``).

    A phase's undonated step is compiled ahead of time, with the shapes of a step's arguments:
    ``eager`` (``train.checkpoint_snapshot = "hold"``) on the loop's thread when a save first
    needs it; otherwise on a background thread, the save that started it (and any other before
    it is ready) taking the snapshot copy instead of holding the state.
    """

    def __init__(self, steps: dict[str, Callable], mesh: Mesh, rules, *, eager: bool):
        self._steps, self._mesh, self._rules, self._eager = steps, mesh, rules, eager
        self._compiled: dict[str, concurrent.futures.Future] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def ready(self, phase: str, args: tuple, *, start: bool = True) -> Callable | None:
        """The compiled undonated step of ``phase`` for arguments shaped like ``args``, or None
        while it is being compiled (started by this call if it is the first and ``start``:
        a later save will need it)."""
        if phase not in self._compiled and (start or self._eager):
            avals = abstract_like(args, jax.tree.map(lambda x: x.sharding, args))
            if self._eager:
                done: concurrent.futures.Future = concurrent.futures.Future()
                done.set_result(self._compile(phase, avals))
                self._compiled[phase] = done
            else:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        1, thread_name_prefix="latentjax-compile"
                    )
                self._compiled[phase] = self._pool.submit(self._compile, phase, avals)
        future = self._compiled.get(phase)
        return future.result() if future is not None and future.done() else None

    def _compile(self, phase: str, avals: tuple) -> Callable:
        with mesh_lib.activation_rules(self._mesh, self._rules):
            return self._steps[phase].lower(*avals).compile()

    def close(self) -> None:
        """Drops compilations that have not started; waits for one under way."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


class PreemptionWatch:
    """Notices a preemption: SIGTERM in a single-process run (a handler that only sets a flag,
    so the step in flight finishes), or, with several processes, the step at which JAX's
    preemption service has all processes stop together
    (``multihost_utils.reached_preemption_sync_point`` through Orbax's ``reached_preemption``;
    that service catches SIGTERM itself, and a per-process flag would let processes stop at
    different steps and hang in a collective)."""

    def __init__(self, checkpointer: Checkpointer):
        self.checkpointer = checkpointer
        self.requested = False
        self._previous = None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        del signum, frame
        self.requested = True

    def reached(self, step: int) -> bool:
        return self.requested or self.checkpointer.reached_preemption(step)

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def _train_option(config, key: str, default: Any) -> Any:
    """``config.train.<key>``, or ``default`` for configs (and saved runs) without it."""
    return config.train.get(key, default)


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
    checkpoint. Returns the final (device) state; after a preemption, the state it saved."""
    workdir = Path(workdir)
    rules = tuple(tuple(r) for r in config.mesh.rules)
    on_nonfinite = _train_option(config, "on_nonfinite", "stop")
    if on_nonfinite not in ON_NONFINITE:
        raise ConfigError(f"train.on_nonfinite={on_nonfinite!r}; use one of {ON_NONFINITE}")
    rng = jax.random.key(config.seed)
    init_rng, step_rng = jax.random.split(rng)
    abstract, shardings, init = build_state(task, mesh, rules, init_rng)

    checkpointer = Checkpointer(
        workdir / "checkpoints",
        max_to_keep=config.train.keep_checkpoints,
        keep_best=_train_option(config, "keep_best", 0),
        best_metric=_train_option(config, "best_metric", "") or None,
        best_mode=_train_option(config, "best_mode", "min"),
        snapshot=_train_option(config, "checkpoint_snapshot", "auto"),
    )
    start = checkpointer.latest_step()
    if start is None:
        state, start = init(init_rng), 0
    else:
        state = checkpointer.restore(abstract, data_iterator)
        if int(jax.device_get(state["step"])) != start:
            raise WorkdirError(f"checkpoint {start} in {workdir} holds a different step counter")
    writer = MetricsWriter(workdir / "metrics.jsonl", start)

    step_fns = jit_steps(task, shardings, mesh, on_nonfinite)
    # Saves hand the state itself to the checkpoint thread where that is cheaper than a
    # snapshot copy (CPU devices); the step after such a save then must not donate it.
    undonated = None
    if checkpointer.prefers_held(state):
        undonated = UndonatedSteps(
            jit_steps(task, shardings, mesh, on_nonfinite, donate=False),
            mesh,
            rules,
            eager=checkpointer.snapshot == "hold",
        )
    after_save = None  # the undonated step to run next, after a held save

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
    skipped = 0

    def check(step: int, host: dict[str, float]) -> None:
        nonlocal skipped
        if not host.get("nonfinite"):
            return
        bad = [k for k, v in host.items() if k != "nonfinite" and not math.isfinite(v)]
        if on_nonfinite == "skip":
            skipped += 1
            bar.write(f"latentjax: non-finite {', '.join(bad)} at step {step}; update skipped")
            return
        where = f"step {last_good}" if last_good else "none yet"
        raise NonFiniteError(
            f"non-finite {', '.join(bad)} at step {step}; "
            f"last good checkpoint: {where} in {workdir / 'checkpoints'}"
        )

    preemption = PreemptionWatch(checkpointer)
    pending = None  # (step, device metrics) whose finiteness is not checked yet
    try:
        for step in range(start + 1, num_steps + 1):
            batch = next(data_iterator)
            if not isinstance(next(iter(batch.values())), jax.Array):  # not yet on devices
                batch = mesh_lib.global_batch(batch, mesh)
            step_fn = after_save or step_fns[task.step_for(step - 1)]
            after_save = None
            # Traced (on first use) with the rules in context: the models' activation
            # constraints (tensor parallelism) apply.
            with mesh_lib.activation_rules(mesh, rules):
                state, metrics = step_fn(state, task.frozen, batch, step_rng)
            if pending is not None:  # the previous step, most likely finished by now
                check(pending[0], _to_host(pending[1]))
            pending = (step, metrics)
            bar.update(1)
            is_last = step == num_steps
            preempted = not is_last and preemption.reached(step)
            saving = step % ckpt_every == 0 or is_last or preempted
            host = None
            if step % log_every == 0 or saving:
                host = _to_host(metrics)
                check(step, host)
                pending = None
                if task.evaluate is not None and (step % config.train.eval_every == 0 or is_last):
                    host.update(task.evaluate(state, step))
                if skipped:
                    host["skipped_updates"] = float(skipped)
                writer.write(step, host)
                bar.set_postfix({k: f"{host[k]:.4g}" for k in PROGRESS_KEYS if k in host})
            if saving:
                if undonated is not None and not is_last and not preempted:
                    args = (state, task.frozen, batch, step_rng)
                    later = step + ckpt_every < num_steps  # another save with steps after it
                    after_save = undonated.ready(task.step_for(step), args, start=later)
                checkpointer.save(
                    step, state, data_iterator, metrics=host, held=after_save is not None
                )
                last_good = step
            if preempted:
                checkpointer.wait()
                bar.write(f"latentjax: preempted; saved step {step} in {workdir / 'checkpoints'}")
                break
    finally:
        preemption.close()
        if undonated is not None:
            undonated.close()
        bar.close()
        checkpointer.wait()
        checkpointer.close()
    return state


def _to_host(metrics: dict[str, jax.Array]) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}
