"""The training loop shared by both stages.

A stage is a :class:`~latentjax.train.state.Task`: its state, its pure step functions, what it
evaluates. The loop owns every effect: sharded initialisation, checkpoint/resume, metrics,
progress. ``train_step(state, frozen, batch, rng) -> (state, metrics)`` is jitted once per phase
with explicit shardings and the state donated; its randomness is ``fold_in(rng, step)``, so a
resumed run draws the same numbers as an uninterrupted one.

Failures: a step whose metrics (loss, gradient norm, ...) hold NaN or Inf either stops the run,
naming the step and the last good checkpoint (``train.on_nonfinite = "stop"``), or is dropped
inside the jitted step, the state staying as it was (``"skip"``). Each step's finiteness is read
back one step late, so the host never waits for the step it just dispatched. SIGTERM (a
preempted VM), or on a multi-process run JAX's preemption sync point, saves a checkpoint and
ends the run cleanly; the next ``train`` on the same workdir resumes from it.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from latentjax import paths
from latentjax import run as run_lib
from latentjax.errors import ConfigError, NonFiniteError, WorkdirError
from latentjax.parallel import mesh as mesh_lib
from latentjax.paths import Path, as_path
from latentjax.train import watch
from latentjax.train.checkpoint import BEST_MODES, SNAPSHOTS, Checkpointer
from latentjax.train.state import Task, build_state, jit_steps

# Metrics shown beside the progress bar when a stage reports them.
PROGRESS_KEYS = ("loss", "rec", "kl", "d_loss", "test_psnr")
ON_NONFINITE = ("stop", "skip")


def check_train_config(t) -> None:
    """One-line errors for a ``train`` section the loop cannot run."""
    for key in ("batch_size", "num_steps", "log_every", "eval_every", "checkpoint_every"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise ConfigError(f"train.{key}={t[key]!r} must be a positive integer")
    if t.keep_checkpoints < 1:
        raise ConfigError(
            f"train.keep_checkpoints={t.keep_checkpoints}: keep at least the last checkpoint"
        )
    if t.keep_best < 0 or t.resume_step < 0:
        raise ConfigError("train.keep_best and train.resume_step must be >= 0")
    watch.check_wandb(t)
    if t.eval_images < 0 or t.profile_start < 0 or t.profile_steps < 0:
        raise ConfigError(
            "train.eval_images, train.profile_start and train.profile_steps must be >= 0"
        )
    if t.profile_steps and not 1 <= t.profile_start <= t.num_steps:
        raise ConfigError(
            f"train.profile_start={t.profile_start}: profiling starts at a step of the run, "
            f"1 to train.num_steps={t.num_steps}"
        )
    choices = {
        "on_nonfinite": ON_NONFINITE,
        "best_mode": BEST_MODES,
        "checkpoint_snapshot": SNAPSHOTS,
    }
    for key, known in choices.items():
        if t[key] not in known:
            raise ConfigError(f"train.{key}={t[key]!r}; use one of {', '.join(known)}")


def run(
    task: Task,
    config,
    workdir: str | Path,
    data_iterator: Iterator[dict[str, Any]],
    mesh: Mesh,
    *,
    progress: bool = True,
    start: Callable[[], None] | None = None,
) -> Any:
    """Trains ``task`` to ``config.train.num_steps``, resuming from ``workdir`` if it holds a
    checkpoint (or from ``train.resume_step``). ``start`` is called once the state is restored
    or initialised and steps remain (it writes the run's config). Returns the final (device)
    state; after a preemption, the state it saved."""
    t, workdir, on_start = config.train, as_path(workdir), start
    check_train_config(t)
    rules = tuple(tuple(r) for r in config.mesh.rules)
    init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
    abstract, shardings, init = build_state(task.init_state, mesh, rules, init_rng)
    checkpointer = Checkpointer(
        workdir / run_lib.CHECKPOINT_DIR,
        max_to_keep=t.keep_checkpoints,
        keep_best=t.keep_best,
        best_metric=t.best_metric or None,
        best_mode=t.best_mode,
        snapshot=t.checkpoint_snapshot,
    )
    try:
        start = checkpointer.resume_step(t.resume_step or None)
        if start:
            state = checkpointer.restore(abstract, data_iterator, step=start)
            if int(jax.device_get(state["step"])) != start:
                raise WorkdirError(
                    f"checkpoint {start} in {workdir} holds a different step counter"
                )
        else:
            state = init(init_rng)
            if task.warm_start is not None:
                state = task.warm_start(state)
    except BaseException:
        checkpointer.close()
        raise
    if on_start is not None and start < t.num_steps:
        on_start()
    steps = jit_steps(task, shardings, mesh, t.on_nonfinite)
    board = workdir / run_lib.TENSORBOARD_DIR
    # A run with no steps left writes no event file (a rerun leaves the directory as it was).
    watching = bool(t.tensorboard or t.wandb_project) and start < t.num_steps
    wandb_run = watch.open_wandb(workdir, config, start) if watching else None
    events = watch.EventWriter(board, start, watching, wandb_run, tensorboard=t.tensorboard)
    monitor = Monitor(workdir, task.name, start, t.num_steps, t.on_nonfinite, progress, events)
    throughput = watch.Throughput(start, t.batch_size, watch.peak_flops())
    profile = watch.Profile(board, t.profile_start, t.profile_steps)
    preemption = PreemptionWatch(checkpointer)
    images = task.images if t.tensorboard or t.wandb_project else None
    try:
        for step in range(start + 1, t.num_steps + 1):
            waiting = time.perf_counter()
            batch = next(data_iterator)
            if not isinstance(next(iter(batch.values())), jax.Array):  # not yet on devices
                batch = mesh_lib.global_batch(batch, mesh)
            throughput.data_wait(time.perf_counter() - waiting)
            phase = task.step_for(step - 1)
            profile.before(step)
            # Traced (on first use) with the rules in context: the models' activation
            # constraints (tensor parallelism) apply.
            with mesh_lib.activation_rules(mesh, rules):
                if phase not in throughput.flops:
                    # Compiled ahead of its first call, to time the compilation and read XLA's
                    # FLOP count; the call below then finds the program in jit's cache.
                    began = time.perf_counter()
                    traced = steps[phase].trace(state, task.frozen, batch, step_rng)
                    compiled = traced.lower().compile()
                    seconds = time.perf_counter() - began
                    flops = watch.compiled_flops(compiled)
                    if watch.loop_trip_counts(compiled):
                        # A scan over chunks: XLA counts its body once. The products and
                        # convolutions counted from the program, each loop times its trips;
                        # no MFU where a loop's trips are unknown, rather than a wrong one.
                        flops, exact = watch.network_flops(traced.jaxpr)
                        flops = flops / mesh.size if exact else math.nan
                    throughput.compiled(phase, seconds, flops)
                state, metrics = steps[phase](state, task.frozen, batch, step_rng)
            throughput.step(phase)
            monitor.dispatched(step, metrics)
            if profile.active:
                began = time.perf_counter()
                if traced := profile.after(step, (state, metrics)):
                    monitor.note(traced)
                throughput.aside(time.perf_counter() - began)  # writing the trace
            is_last = step == t.num_steps
            preempted = not is_last and preemption.reached(step)
            saving = step % t.checkpoint_every == 0 or is_last or preempted
            host = None
            if step % t.log_every == 0 or saving:
                host = monitor.fetch(step, metrics)  # waits for the step
                perf = throughput.report(step)
                began = time.perf_counter()
                if step % t.eval_every == 0 or is_last:
                    if task.evaluate is not None:
                        host.update(task.evaluate(state, step))
                    if images is not None:
                        events.images(step, images(state, step))
                throughput.aside(time.perf_counter() - began)
                monitor.log(step, host, perf)
            if saving:
                checkpointer.save(step, state, data_iterator, metrics=host)
                monitor.last_good = step
            if preempted:
                checkpointer.wait()
                monitor.note(f"preempted; saved step {step} in {checkpointer.directory}")
                break
        checkpointer.wait()
        monitor.finish(t.num_steps - start)
    finally:
        if traced := profile.stop():
            monitor.note(traced)
        preemption.close()
        monitor.close()
        events.close()
        checkpointer.close()
    return state


class Monitor:
    """A run's progress (a bar on a terminal, else a line per logged step), ``metrics.jsonl``
    (process 0 only) and non-finite check. A step's metrics are checked when the next step has
    been dispatched (the host does not wait for the step it just dispatched), or at once on log
    steps, where they are read back anyway."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        start: int,
        num_steps: int,
        on_nonfinite,
        progress,
        events: watch.EventWriter | None = None,
    ):
        self.path, self.on_nonfinite = workdir / run_lib.METRICS_FILE, on_nonfinite
        self.checkpoints = workdir / run_lib.CHECKPOINT_DIR
        self.writer = jax.process_index() == 0
        self.num_steps, self.name = num_steps, name
        self.events = events
        self.last_good = start or None
        self.skipped = 0
        self._pending = None  # (step, device metrics) not checked yet
        interactive = progress and sys.stderr.isatty()
        self.lines = self.writer and not interactive
        # An object in a bucket cannot be appended to: there the file is rewritten whole at
        # each record (it is small: one line per logged step).
        self._local, self._text = paths.is_local(self.path), ""
        if self.writer and self.path.exists():
            kept = "".join(
                json.dumps(r) + "\n" for r in read_metrics(self.path) if r["step"] <= start
            )
            # Lines logged after the checkpoint we resume from will be logged again.
            run_lib.write_atomic(self.path, lambda f: f.write(kept.encode()))
            self._text = kept
        self.bar = tqdm(
            total=num_steps,
            initial=start,
            desc=f"train {name}",
            disable=not interactive or not self.writer,
            dynamic_ncols=True,
        )

    def dispatched(self, step: int, metrics: dict[str, jax.Array]) -> None:
        if self._pending is not None:  # the previous step, most likely finished by now
            self._check(*self._pending)
        self._pending = (step, metrics)
        self.bar.update(1)

    def fetch(self, step: int, metrics: dict[str, jax.Array]) -> dict[str, float]:
        """The step's metrics on the host (this waits for the step), checked for NaN/Inf."""
        host = {k: float(v) for k, v in jax.device_get(metrics).items()}
        self._pending = None
        self._check(step, host)
        if self.skipped:
            host["skipped_updates"] = float(self.skipped)
        return host

    def log(self, step: int, host: dict[str, float], perf: dict[str, float | None]) -> None:
        """One record: ``metrics.jsonl``, TensorBoard, the bar or a line. ``perf``: the watch
        fields (:class:`~latentjax.train.watch.Throughput`)."""
        # NaN/Inf (a skipped update) as null: metrics.jsonl stays strict JSON.
        record = {k: v if math.isfinite(v) else None for k, v in host.items()}
        record.update(perf)
        if self.writer:
            line = json.dumps({"step": step, **record}) + "\n"
            if self._local:
                with self.path.open("a") as f:
                    f.write(line)
            else:
                self._text += line
                run_lib.write_atomic(self.path, lambda f: f.write(self._text.encode()))
        if self.events is not None:
            self.events.scalars(step, record)
        for key, seconds in perf.items():
            if key.startswith("compile_seconds_"):
                flops = perf.get("flops_per_step")
                self.note(
                    f"compiled {self.name} {key[len('compile_seconds_') :]} step in "
                    f"{seconds:.1f} s"
                    + (f" ({flops:.3g} FLOPs per step per device)" if flops else "")
                )
        shown = {k: f"{host[k]:.4g}" for k in PROGRESS_KEYS if k in host}
        self.bar.set_postfix(shown)
        if self.lines:
            values = " ".join(f"{k} {v}" for k, v in shown.items())
            print(f"latentjax: {self.name} step {step}/{self.num_steps} {values} ({_pace(perf)})")

    def _check(self, step: int, metrics: dict[str, Any]) -> None:
        if not float(np.asarray(metrics["nonfinite"])):
            return
        host = {k: float(v) for k, v in jax.device_get(metrics).items()}
        bad = ", ".join(k for k, v in host.items() if k != "nonfinite" and not math.isfinite(v))
        if self.on_nonfinite == "skip":
            self.skipped += 1
            self.note(f"non-finite {bad} at step {step}; update skipped")
            return
        where = f"step {self.last_good}" if self.last_good else "none yet"
        raise NonFiniteError(
            f"non-finite {bad} at step {step}; last good checkpoint: {where} in {self.checkpoints}"
        )

    def note(self, text: str) -> None:
        self.bar.write(f"latentjax: {text}")

    def finish(self, steps_run: int) -> None:
        """A run whose every update was skipped learnt nothing: that is an error, not a
        finished run."""
        if steps_run > 0 and self.skipped >= steps_run:
            raise NonFiniteError(
                f"every one of the {steps_run} updates was skipped (non-finite loss or gradient)"
                f"; nothing was learnt. The checkpoints in {self.checkpoints} hold the start state"
            )

    def close(self) -> None:
        self.bar.close()


def _pace(perf: dict[str, float | None]) -> str:
    """``3.2 steps/s, 205 examples/s, data wait 1%, MFU 41%`` (MFU n/a where the chip's peak is
    unknown, e.g. on CPU)."""
    mfu = perf.get("mfu")
    parts = [
        f"{perf['steps_per_s']:.3g} steps/s",
        f"{perf['examples_per_s']:.4g} examples/s",
        f"data wait {100 * perf['data_wait_fraction']:.0f}%",
        f"MFU {100 * mfu:.1f}%" if mfu is not None else "MFU n/a",
    ]
    if "memory_bytes_in_use" in perf:
        parts.append(f"memory {perf['memory_bytes_in_use'] / 2**30:.2f} GiB")
    return ", ".join(parts)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``. A last line cut short (a process killed while
    writing it) is dropped; a damaged line before it is a one-line error."""
    lines = [ln for ln in as_path(path).read_text().splitlines() if ln.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("no step")
        except ValueError as e:
            if i == len(lines) - 1:
                break
            raise WorkdirError(f"{path} line {i + 1} is damaged ({e}); fix or remove it") from e
        records.append(record)
    return records


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
