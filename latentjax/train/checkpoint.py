"""Orbax checkpoints of the whole training state plus the Grain iterator.

Each checkpoint step holds two items: ``state`` (step, parameters, optimiser state, EMA: any
pytree of jax.Arrays, saved sharded) and ``data`` (the data iterator's position, one JSON file
per process). Saves are Orbax's asynchronous ones: ``save`` returns once the arrays are copied
off the device and the files are written by Orbax's thread. On accelerators (``snapshot``), the
state is first copied into pinned host memory by one compiled program on the device's own
stream, and a background thread hands that copy to Orbax, so the loop dispatches its next,
donating step at once instead of waiting for the device-to-host transfer; on CPU devices, where
device memory is host memory, Orbax's own copy is used.

Orbax writes each step into a temporary directory and renames it when every item is complete, so
a save interrupted midway (a killed process, a full disk) is never listed as a checkpoint; its
leftovers are removed when the next manager opens the directory. Which steps are kept: the last
``max_to_keep`` plus the ``keep_best`` best by a metric passed to ``save`` (Orbax preservation
policies; a step is deleted only when no policy keeps it).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import json
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from latentjax.errors import WorkdirError

BEST_MODES = ("min", "max")
SNAPSHOTS = ("auto", "on", "off")  # "auto": a pinned-host snapshot on accelerators only


class CheckpointError(WorkdirError):
    """A checkpoint could not be written (e.g. the disk is full)."""


class Checkpointer:
    def __init__(
        self,
        directory: str | Path,
        *,
        max_to_keep: int = 3,
        keep_best: int = 0,
        best_metric: str | None = None,
        best_mode: str = "min",
        snapshot: str = "auto",
    ):
        self.directory = Path(directory).absolute()
        if keep_best and not best_metric:
            raise WorkdirError("keeping the best checkpoints needs a metric name (best_metric)")
        if best_mode not in BEST_MODES:
            raise WorkdirError(f"best_mode={best_mode!r}; use one of {BEST_MODES}")
        if snapshot not in SNAPSHOTS:
            raise WorkdirError(f"checkpoint snapshot={snapshot!r}; use one of {SNAPSHOTS}")
        self.snapshot = snapshot
        self.best_metric = best_metric if keep_best else None
        policies = [ocp.checkpoint_managers.LatestN(n=max_to_keep)]
        if keep_best:
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[best_metric],
                    reverse=best_mode == "min",  # BestN sorts ascending and keeps the tail
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=True,
            create=True,
            cleanup_tmp_directories=True,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        )
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "data": grain.checkpoint.CheckpointHandler(),
        }
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=handlers
        )
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._handoff: concurrent.futures.Future | None = None  # a snapshot on its way to Orbax
        self._copy: tuple[Any, Any] | None = None  # (state layout, its compiled snapshot copy)

    def latest_step(self) -> int | None:
        self._finish_handoff()
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        self._finish_handoff()
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_iterator: Any = None, metrics=None) -> None:
        """Starts writing ``step``; returns before the files are written (see :meth:`wait`).
        ``metrics`` ranks the step for ``keep_best``. The values written are those at the call:
        the caller may donate ``state`` and advance ``data_iterator`` as soon as it returns."""
        self._finish_handoff()  # one hand-off at a time; raises an earlier one's error
        metrics = {self.best_metric: metrics[self.best_metric]} if self._ranks(metrics) else None
        position = None if data_iterator is None else _Position(data_iterator)
        snapshot = self._snapshot(state)
        if snapshot is None:
            self._save_now(step, state, position, metrics)
        else:  # the copy runs on the device; Orbax waits for it on the worker thread
            self._handoff = self._worker.submit(self._save_now, step, snapshot, position, metrics)

    def _ranks(self, metrics) -> bool:
        return self.best_metric is not None and metrics is not None and self.best_metric in metrics

    def _snapshot(self, state: Any) -> Any | None:
        """A copy of ``state`` in pinned host memory where the devices have it (else in device
        memory), dispatched asynchronously; None where Orbax's own copy is used (CPU devices,
        "off"). One compiled copy per state layout."""
        leaves = jax.tree.leaves(state)
        on_cpu = not leaves or next(iter(leaves[0].devices())).platform == "cpu"
        if self.snapshot == "off" or (self.snapshot == "auto" and on_cpu):
            return None
        key = (jax.tree.structure(state), tuple((x.shape, x.dtype, x.sharding) for x in leaves))
        if self._copy is None or self._copy[0] != key:
            targets = jax.tree.map(_host_target, state)
            self._copy = (key, jax.jit(_copy, out_shardings=targets))
        return self._copy[1](state)

    def _save_now(self, step: int, state: Any, position: Any, metrics: Any) -> None:
        items = {"state": ocp.args.StandardSave(state)}
        if position is not None:
            items["data"] = grain.checkpoint.CheckpointSave(position)
        with self._reraise(step):
            # force: the loop decides when to save (Orbax's own interval policy is not used).
            self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def _finish_handoff(self) -> None:
        future, self._handoff = self._handoff, None
        if future is not None:
            future.result()

    def restore(self, abstract_state: Any, data_iterator: Any = None, step: int | None = None):
        """Restores onto the shardings of ``abstract_state`` (a tree of ``jax.ShapeDtypeStruct``
        with ``sharding`` set), which may differ from the mesh the checkpoint was written on.
        ``data_iterator``, if given, is moved to the saved position in place."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise WorkdirError(f"no checkpoint in {self.directory}")
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, TypeError) as e:
            raise WorkdirError(
                f"checkpoint {self.directory}/{step} does not match this model's state "
                f"(is the workdir from another run?): {_first_line(e)}"
            ) from e
        return restored["state"]

    def reached_preemption(self, step: int) -> bool:
        """True on every process at the step JAX's preemption service chose after one of them
        got a preemption notice (multi-process runs; always False in a single process)."""
        return jax.process_count() > 1 and self._manager.reached_preemption(step)

    def wait(self) -> None:
        """Blocks until the last save is on disk; raises :class:`CheckpointError` if it failed."""
        self._finish_handoff()
        with self._reraise(None):
            self._manager.wait_until_finished()

    def close(self) -> None:
        try:
            self._finish_handoff()
        finally:
            self._worker.shutdown()
            self._manager.close()

    @contextlib.contextmanager
    def _reraise(self, step: int | None):
        """Turns an OSError of a save (raised now, or by an earlier asynchronous save) into one
        line that says which checkpoint is still good."""
        try:
            yield
        except Exception as error:
            cause = error
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            what = "no space left on device" if cause.errno == errno.ENOSPC else _first_line(cause)
            good = self._manager.latest_step()
            of = f" of step {step}" if step is not None else ""
            raise CheckpointError(
                f"saving the checkpoint{of} in {self.directory} failed ({what}); latest complete "
                f"checkpoint: {'none' if good is None else f'step {good}'}"
            ) from error


def _copy(state: Any) -> Any:
    return jax.tree.map(lambda x: x.copy(), state)


def _host_target(x: jax.Array):
    """Where a snapshot of ``x`` goes: pinned host memory if its devices have it."""
    kinds = {m.kind for d in x.sharding.addressable_devices for m in d.addressable_memories()}
    return x.sharding.with_memory_kind("pinned_host") if "pinned_host" in kinds else x.sharding


class _Position:
    """A data iterator's position taken now, for a save that writes it later: Grain's handler
    writes ``get_state()`` (bytes, or JSON of a ``DatasetIterator``'s dict) to one file per
    process, and by then the iterator itself has moved on."""

    def __init__(self, iterator: Any):
        state = iterator.get_state()
        if isinstance(state, dict):  # a grain DatasetIterator; written as Grain writes it
            state = json.dumps(state, indent=4).encode()
        self._state = state

    def get_state(self) -> bytes:
        return self._state


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
