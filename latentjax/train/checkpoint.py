"""Orbax checkpoints of the whole training state plus the Grain iterator.

Each checkpoint step holds two items: ``state`` (step, parameters, optimiser state, EMA — any
pytree of jax.Arrays, saved sharded) and ``data`` (the Grain iterator position, one JSON file per
process). Saves are asynchronous: ``save`` returns once device buffers are copied and the write
goes on in the background; Orbax writes into a temporary directory and renames it when complete,
so a save interrupted midway is never listed as a checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from latentjax.errors import WorkdirError


class Checkpointer:
    def __init__(self, directory: str | Path, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True
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
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, data_iterator: Any | None = None) -> None:
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self._manager.save(step, args=ocp.args.Composite(**items))

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

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves carrying ``shardings``: the restore target."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
