"""Orbax checkpoints of the whole training state plus the Grain iterator.

Each checkpoint step holds two items: ``state`` (step, parameters, optimiser state, EMA — any
pytree of jax.Arrays, saved sharded) and ``data`` (the Grain iterator position, one JSON file per
process). Saves are asynchronous: ``save`` returns once device buffers are copied and the write
goes on in the background. Orbax writes each step into a temporary directory
(``<step>.orbax-checkpoint-tmp-*``) and renames it when every item is complete, so a save
interrupted midway (a killed process, a full disk) is never listed as a checkpoint; leftovers of
such a save are removed when the next manager opens the directory.

Which steps are kept: the last ``max_to_keep`` plus the ``keep_best`` best by a metric passed to
``save`` (Orbax preservation policies; a step is deleted only when no policy keeps it).
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from latentjax.errors import WorkdirError

BEST_MODES = ("min", "max")


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
    ):
        self.directory = Path(directory).absolute()
        if keep_best and not best_metric:
            raise WorkdirError("keeping the best checkpoints needs a metric name (best_metric)")
        if best_mode not in BEST_MODES:
            raise WorkdirError(f"best_mode={best_mode!r}; use one of {BEST_MODES}")
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
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(
        self,
        step: int,
        state: Any,
        data_iterator: Any | None = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Starts writing ``step`` (returns before the write ends; see :meth:`wait`).

        ``metrics`` ranks the step for ``keep_best``; a step without the best metric is kept
        only while it is among the last ``max_to_keep``.
        """
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        if self.best_metric is not None and metrics is not None:
            metrics = {k: v for k, v in metrics.items() if k == self.best_metric} or None
        else:
            metrics = None
        with self._reraise(step):
            # force: the loop decides when to save (Orbax's own interval policy is not used).
            self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def restore(
        self, abstract_state: Any, data_iterator: Any | None = None, step: int | None = None
    ) -> Any:
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
        with self._reraise(None):
            self._manager.wait_until_finished()

    def close(self) -> None:
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
            good = self.latest_step()
            where = f"step {good}" if good is not None else "none"
            of = f" of step {step}" if step is not None else ""
            raise CheckpointError(
                f"saving the checkpoint{of} in {self.directory} failed ({what}); "
                f"latest complete checkpoint: {where}"
            ) from error


def abstract_like(tree: Any, shardings: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves carrying ``shardings``: the restore target."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
