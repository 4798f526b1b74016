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

Damage is detected: each step also holds a third item, ``checksums``, a fingerprint of every
saved array computed on the devices at save time (:func:`fingerprints`: a weighted sum of the
array's bits, which any single flipped bit changes), written in the same atomic step. A restore
recomputes them and reports a mismatch, or any failure to read the step, in one line naming the
earlier checkpoints; ``train.resume_step`` then resumes from one of them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import json
from typing import Any

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from latentjax.errors import WorkdirError
from latentjax.paths import Path, absolute

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
        self.directory = absolute(directory)
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
            "checksums": ocp.JsonCheckpointHandler(),
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
        items = {
            "state": ocp.args.StandardSave(state),
            "checksums": ocp.args.JsonSave(fingerprints(state)),
        }
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
        checked = (self.directory / str(step) / "checksums").is_dir()  # older steps have none
        if checked:
            items["checksums"] = ocp.args.JsonRestore()
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001 - any failure to read a step is reported as one line
            if self._matches(step, abstract_state) is False:
                raise WorkdirError(
                    f"checkpoint {self.directory}/{step} does not match this model's state "
                    f"(is the workdir from another run?): {_first_line(e)}"
                ) from e
            raise self._damaged(step, _first_line(e)) from e
        if checked:
            got, saved = fingerprints(restored["state"]), restored["checksums"]
            bad = sorted(k for k in saved if got.get(k) != saved[k])
            if bad or set(got) != set(saved):
                raise self._damaged(step, f"{bad[0] if bad else 'the state'} fails its checksum")
        return restored["state"]

    def _matches(self, step: int, abstract_state: Any) -> bool | None:
        """Whether the saved state's tree and shapes are ``abstract_state``'s (None: its
        metadata cannot be read either)."""
        try:
            saved = self._manager.item_metadata(step)["state"]
            # Orbax's metadata tree spells containers its own way (a named tuple as a dict):
            # compare the arrays' shapes, which another model does not share.
            shapes = sorted(tuple(m.shape) for m in jax.tree.leaves(saved))
        except Exception:  # noqa: BLE001 - unreadable metadata: the step is damaged
            return None
        return shapes == sorted(tuple(x.shape) for x in jax.tree.leaves(abstract_state))

    def _damaged(self, step: int, why: str) -> CheckpointError:
        earlier = [s for s in self.all_steps() if s < step]
        advice = (
            f"earlier checkpoints: {', '.join(map(str, earlier))}; resume from one with "
            f"--config.train.resume_step={earlier[-1]}"
            if earlier
            else "there is no earlier checkpoint"
        )
        return CheckpointError(f"checkpoint {self.directory}/{step} is damaged ({why}); {advice}")

    def resume_step(self, step: int | None) -> int:
        """The step a run resumes from: ``step``, or the latest checkpoint (0 if none). The
        checkpoints after ``step`` are moved aside (``discarded-STEP``, kept for inspection),
        so the run can save those steps anew."""
        steps = self.all_steps()
        if step is None:
            return steps[-1] if steps else 0
        if step not in steps:
            raise WorkdirError(
                f"train.resume_step={step}: no checkpoint of that step in {self.directory} "
                f"(it has {', '.join(map(str, steps)) or 'none'})"
            )
        later = [s for s in steps if s > step]
        if later and jax.process_index() == 0:
            for s in later:
                aside, n = self.directory / f"discarded-{s}", 1
                while aside.exists():  # discarded before, by an earlier resume_step
                    aside, n = self.directory / f"discarded-{s}.{n}", n + 1
                (self.directory / str(s)).rename(aside)  # a local disk: os.rename
        if later:
            self._manager.reload()
        return step

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
            chain, cause = [], error
            while cause is not None:
                chain.append(cause)
                cause = cause.__cause__ or cause.__context__
            oserror = next((e for e in chain if isinstance(e, OSError)), None)
            # TensorStore reports a full disk as a ValueError "RESOURCE_EXHAUSTED: ...".
            full = any("RESOURCE_EXHAUSTED" in str(e) for e in chain)
            if oserror is None and not full:
                raise
            if full or oserror.errno == errno.ENOSPC:
                what = "no space left on device"
            else:
                what = _first_line(oserror)
            good = self._manager.latest_step()
            of = f" of step {step}" if step is not None else ""
            raise CheckpointError(
                f"saving the checkpoint{of} in {self.directory} failed ({what}); latest complete "
                f"checkpoint: {'none' if good is None else f'step {good}'}"
            ) from error


def fingerprints(state: Any) -> dict[str, int]:
    """A checksum of each array of ``state`` (by its tree path), computed on its devices: the sum
    over the flattened bits b_i (each element's bit pattern as an unsigned integer) of
    (2 i + 1) b_i modulo 2^32. A single flipped bit changes b_i by +-2^k and the sum by an odd
    multiple of 2^k, never 0 modulo 2^32: every single-bit flip is caught, and, being a plain
    sum, it is the same however the array is sharded."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    named = [(jax.tree_util.keystr(p), x) for p, x in leaves if isinstance(x, jax.Array)]
    sums = jax.device_get(_fingerprint_all([x for _, x in named]))
    return {name: int(v) for (name, _), v in zip(named, sums, strict=True)}


@jax.jit
def _fingerprint_all(arrays: list[jax.Array]) -> list[jax.Array]:
    return [_fingerprint(x) for x in arrays]


def _fingerprint(x: jax.Array) -> jax.Array:
    kind = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.uint8) if x.dtype == bool else x, kind)
    bits = bits.astype(jnp.uint32)
    # The row-major index of each element, built from iotas laid out as ``x`` is (no reshape,
    # which a sharding carried in the array's type would not allow).
    sharding = jax.typeof(bits).sharding
    index, stride = jnp.zeros((), jnp.uint32), 1
    for dim in reversed(range(bits.ndim)):
        iota = jax.lax.broadcasted_iota(jnp.uint32, bits.shape, dim, out_sharding=sharding)
        index, stride = index + iota * jnp.uint32(stride), stride * bits.shape[dim]
    return jnp.sum(bits * (2 * index + 1), dtype=jnp.uint32)


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
