"""Orbax checkpoints of the whole training state plus the Grain iterator.

Each checkpoint step holds two items: ``state`` (step, parameters, optimiser state, EMA — any
pytree of jax.Arrays, saved sharded) and ``data`` (the Grain iterator position, one JSON file per
process). Saves are asynchronous in two layers. Orbax's own ``save`` blocks its caller while it
walks the tree, starts threads and copies every array to the host, which on a small model takes
as long as a training step; so ``save`` here only records the iterator's position and either
hands the state itself to a background thread that calls Orbax (``held=True``: the caller
promises not to donate or delete those arrays until the save is on disk; the training loop keeps
that promise by running the step after a save without donation) or, by default, first
snapshots it (one compiled copy of every array, into pinned host memory where the device has
it, else into device memory; the copy is what lets the next, donating train step reuse the
buffers). Which of the two a run should use is :meth:`Checkpointer.prefers_held`: on CPU
devices, where device memory is host memory and a copy costs as much as the step's own memory
traffic, the state is held (no copy); on accelerators the snapshot frees device memory at once.
On CPU devices a snapshot is written into the buffers of the previous one once that save is on
disk (fresh buffers cost the kernel's page faults, as much time as the copy). ``snapshot="off"``
calls Orbax on the caller's thread instead (no extra memory; Orbax's reads of the live state
hold up the next, donating step: on a 2 GB state on CPU that blocked the loop 15x longer than
the snapshot).
An error of a background save is raised by the next ``save`` or ``wait``.

Orbax writes each step into a temporary directory (``<step>.orbax-checkpoint-tmp-*``) and renames
it when every item is complete, so a save interrupted midway (a killed process, a full disk) is
never listed as a checkpoint; leftovers of such a save are removed when the next manager opens
the directory.

Which steps are kept: the last ``max_to_keep`` plus the ``keep_best`` best by a metric passed to
``save`` (Orbax preservation policies; a step is deleted only when no policy keeps it).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import errno
import json
from pathlib import Path
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from latentjax.errors import WorkdirError

BEST_MODES = ("min", "max")
# "auto": hold the state on CPU devices, else snapshot it (pinned host memory where the device
# has it); "hold": hold it on any device (it stays in device memory until written); "device":
# always snapshot it into device memory; "off": Orbax on the caller's thread.
SNAPSHOTS = ("auto", "hold", "device", "off")


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
        async_save: bool = True,
        snapshot: str = "auto",
    ):
        self.directory = Path(directory).absolute()
        if keep_best and not best_metric:
            raise WorkdirError("keeping the best checkpoints needs a metric name (best_metric)")
        if best_mode not in BEST_MODES:
            raise WorkdirError(f"best_mode={best_mode!r}; use one of {BEST_MODES}")
        if snapshot not in SNAPSHOTS:
            raise WorkdirError(f"checkpoint snapshot={snapshot!r}; use one of {SNAPSHOTS}")
        self.snapshot = snapshot if async_save else "off"
        self._worker = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="latentjax-checkpoint")
            if self.snapshot != "off"
            else None
        )
        self._in_flight: concurrent.futures.Future | None = None  # a save being handed over
        self._copy: tuple[Any, _StateCopy] | None = None  # (state structure, its copy)
        self.best_metric = best_metric if keep_best else None
        policies = [ocp.checkpoint_managers.LatestN(n=max_to_keep)]
        if keep_best:
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[best_metric],
                    # BestN sorts ascending and keeps the tail: reversed for "min".
                    reverse=best_mode == "min",
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": grain.checkpoint.CheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        self._finish_handoff()
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        self._finish_handoff()
        return sorted(self._manager.all_steps())

    def prefers_held(self, state: Any) -> bool:
        """Whether saves of ``state`` should be ``held`` (no snapshot copy) by a caller that can
        keep the state's arrays alive and undonated until each save is on disk."""
        if self.snapshot == "hold":
            return True
        # "auto": on CPU devices of a single process. The step after a held save is compiled
        # in the background and used once ready; processes that got there at different saves
        # would run different programs with collectives in them.
        arrays = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array)]
        return self.snapshot == "auto" and jax.process_count() == 1 and _on_cpu(arrays)

    def save(
        self,
        step: int,
        state: Any,
        data_iterator: Any | None = None,
        metrics: dict[str, float] | None = None,
        *,
        held: bool = False,
    ) -> None:
        """Starts writing ``step`` (returns before the write ends; see :meth:`wait`).

        ``metrics`` ranks the step for ``keep_best``; a step without the best metric is kept
        only while it is among the last ``max_to_keep``. ``held=True`` writes ``state``'s own
        arrays, without a snapshot: the caller must not donate or delete them before
        :meth:`wait` returns or :meth:`saving` is False (ignored with ``snapshot="off"``,
        which has written them when this returns).
        """
        # One save at a time is handed over: an earlier one still being handed to Orbax is
        # waited for here (and its error, if any, raised), so at most one snapshot exists.
        self._finish_handoff()
        if self.best_metric is not None and metrics is not None:
            metrics = {k: v for k, v in metrics.items() if k == self.best_metric} or None
        else:
            metrics = None
        if self._worker is None:
            self._save_now(step, state, data_iterator, metrics)
            return
        copier = None if held else self._copier(state)
        # The last snapshot's buffers are free once Orbax has written them (the hand-off of
        # that save has finished: waited for above).
        snapshot = state if held else copier(state, reuse=not self._manager.is_saving_in_progress())
        position = None if data_iterator is None else _Position(data_iterator)
        self._in_flight = self._worker.submit(self._hand_over, step, snapshot, position, metrics)
        if copier is not None:  # after the hand-off, which the worker thread runs first
            copier.prepare(self._worker)

    def saving(self) -> bool:
        """Whether a save is still being handed over or written."""
        in_flight = self._in_flight is not None and not self._in_flight.done()
        return in_flight or self._manager.is_saving_in_progress()

    def _hand_over(self, step: int, snapshot: Any, position: Any, metrics: Any) -> None:
        """On the checkpoint thread: waits (without the GIL) until the snapshot copy is done,
        then starts Orbax's save. Orbax's own Python work would otherwise hold the GIL while
        the loop dispatches its next step."""
        jax.block_until_ready(snapshot)
        self._save_now(step, snapshot, position, metrics)

    def _save_now(self, step: int, state: Any, data_iterator: Any, metrics: Any) -> None:
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        with self._reraise(step):
            # force: the loop decides when to save (Orbax's own interval policy is not used).
            self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def _copier(self, state: Any) -> _StateCopy:
        """The snapshot copy for states of this structure, shapes and shardings (one per run,
        made at its first save)."""
        arrays = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array)]
        key = (jax.tree.structure(state), tuple((x.shape, x.dtype, x.sharding) for x in arrays))
        if self._copy is None or self._copy[0] != key:
            targets = [self._target(x.sharding) for x in arrays]
            self._copy = (key, _StateCopy(arrays, targets, cpu=_on_cpu(arrays)))
        return self._copy[1]

    def _target(self, sharding):
        kinds = {m.kind for d in sharding.addressable_devices for m in d.addressable_memories()}
        if self.snapshot in ("auto", "hold") and "pinned_host" in kinds:
            return sharding.with_memory_kind("pinned_host")
        return sharding

    def _finish_handoff(self) -> None:
        """Waits until the save handed to the background thread has reached Orbax; raises
        its error, if any."""
        future, self._in_flight = self._in_flight, None
        if future is not None:
            future.result()

    def restore(
        self, abstract_state: Any, data_iterator: Any | None = None, step: int | None = None
    ) -> Any:
        """Restores onto the shardings of ``abstract_state`` (a tree of ``jax.ShapeDtypeStruct``
        with ``sharding`` set), which may differ from the mesh the checkpoint was written on.
        ``data_iterator``, if given, is moved to the saved position in place."""
        self._finish_handoff()
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
            if self._worker is not None:
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
            where = f"step {good}" if good is not None else "none"
            of = f" of step {step}" if step is not None else ""
            raise CheckpointError(
                f"saving the checkpoint{of} in {self.directory} failed ({what}); "
                f"latest complete checkpoint: {where}"
            ) from error


class _StateCopy:
    """Copies a state (one structure, shapes and shardings) with one compiled program: its
    arrays into ``targets`` (shardings), its host leaves (NumPy arrays, numbers) by Python.

    On CPU devices (``cpu=True``) two things make the copy cheaper for the loop:

    - It runs asynchronously. XLA:CPU runs a program that its cost analysis counts under 1000
      flops inline, on the calling thread (``cheap_computation_`` in XLA's
      ``pjrt/cpu/cpu_client.cc``), and a copy counts none. The program therefore also sums the
      squares of a small replicated vector (``_TICK`` elements, no collective): ``save``
      returns after the dispatch, XLA's threads copy (on the 20 MB digits state 2.8 ms on two
      cores instead of 4 ms inline), and the next, donating train step starts once the copies
      have read the state.
    - It reuses buffers. The buffers of the last copy are kept and, called with
      ``reuse=True`` (the save that used them is on disk), the next copy is written into them
      by a second program that donates them. Fresh buffers cost the kernel's page faults and
      zeroing on top of the copy (the same copy took 5 to 15 ms into fresh buffers). The price
      is one state's size of host memory held between saves. The second program is compiled
      by :meth:`prepare` on the checkpoint thread, so no save waits for it.
    """

    def __init__(self, arrays: list[jax.Array], targets: list[Any], *, cpu: bool):
        replicated = _replicated(arrays[0].sharding) if cpu and arrays else None
        self._tick = None
        out_shardings: Any = targets
        if replicated is not None:
            self._tick = jax.device_put(np.ones(_TICK, np.float32), replicated)
            out_shardings = (targets, replicated)
        self._out_shardings = out_shardings
        self._fresh = jax.jit(_copy_all, out_shardings=out_shardings)
        self._reuse = cpu
        # The arguments of the donating program, for compiling it ahead of its first call.
        self._avals = (
            [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding) for x in arrays],
            self._tick,
            [
                jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=t)
                for x, t in zip(arrays, targets, strict=True)
            ],
        )
        self._into: concurrent.futures.Future | None = None
        self._last: list[jax.Array] | None = None

    def prepare(self, worker: concurrent.futures.Executor) -> None:
        """Compiles the copy into reused buffers on ``worker`` (once)."""
        if not self._reuse or self._into is not None:
            return
        into = jax.jit(
            _copy_all, out_shardings=self._out_shardings, donate_argnums=2, keep_unused=True
        )
        self._into = worker.submit(lambda: into.lower(*self._avals).compile())

    def __call__(self, state: Any, *, reuse: bool) -> Any:
        leaves, treedef = jax.tree.flatten(state)
        arrays = [x for x in leaves if isinstance(x, jax.Array)]
        into = self._into
        ready = into is not None and into.done() and into.exception() is None
        if ready and reuse and self._last is not None:
            # If a buffer is still referenced outside JAX (a NumPy view of it), XLA copies
            # instead of overwriting it.
            out = into.result()(arrays, self._tick, self._last)
        else:
            out = self._fresh(arrays, self._tick)
        if self._tick is not None:
            out = out[0]
        if self._reuse:
            self._last = out
        copies = iter(out)
        out = [next(copies) if isinstance(x, jax.Array) else copy.copy(x) for x in leaves]
        return jax.tree.unflatten(treedef, out)


# Elements of the vector whose sum of squares makes XLA:CPU dispatch the copy asynchronously.
_TICK = 1024


def _copy_all(arrays: list[jax.Array], tick: Any = None, buffers: Any = None) -> Any:
    """Copies of ``arrays``, with the sum of squares of ``tick`` if given (``buffers``, when
    given, are only there to be donated)."""
    del buffers
    copies = [jnp.copy(x) for x in arrays]
    return copies if tick is None else (copies, jnp.sum(tick * tick))


def _on_cpu(arrays: list[jax.Array]) -> bool:
    return bool(arrays) and next(iter(arrays[0].devices())).platform == "cpu"


def _replicated(sharding: jax.sharding.Sharding) -> jax.sharding.Sharding | None:
    """A sharding that replicates over the devices of ``sharding`` (None if unknown)."""
    if isinstance(sharding, jax.sharding.NamedSharding):
        return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        return sharding.with_memory_kind("device")
    return None


class _Position:
    """A data iterator's position taken now, for a save that runs later: Grain's handler
    writes ``get_state()`` (bytes, or JSON of a ``DatasetIterator``'s dict) to one file per
    process, and by then the iterator itself has moved on."""

    def __init__(self, iterator: Any):
        state = iterator.get_state()
        if isinstance(state, dict):  # a grain DatasetIterator; written as Grain writes it
            state = json.dumps(state, indent=4).encode()
        self._state = state

    def get_state(self) -> bytes:
        return self._state


def abstract_like(tree: Any, shardings: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves carrying ``shardings``: the restore target."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
