"""A toy training run through ``latentjax.train.loop`` for tests that need a separate process
(kill -9, SIGTERM, fake devices). Writes the final parameters to ``--out`` (npz).

    python tests/scripts/toy_train.py --workdir W --steps 20 [--hang-after-batches 13]
        [--hang-in-save-after 10] [--fsdp 4] [--out params.npz]
        [--coordinator HOST:PORT --num-processes N --process-id I]

``--hang-after-batches N``: after drawing N batches, write ``W/hung`` and sleep (to be killed).
``--hang-in-save-after S``: saves of steps > S hang while writing the data item, before Orbax
commits the step (so a kill lands in the middle of a save); ``W/hung`` marks it.
``--coordinator``: one of N processes of a ``jax.distributed`` run (all on this machine), each
feeding its own half of every batch; the workdir is shared, as on a pod.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import traceback
from pathlib import Path

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def config(steps: int, checkpoint_every: int, fsdp: int) -> ml_collections.ConfigDict:
    from latentjax.configs.common import train_config

    train = train_config(
        num_steps=steps,
        log_every=1,
        eval_every=1000,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=3,
    )
    return ml_collections.ConfigDict(
        {
            "stage": "toy",
            "seed": 0,
            "model": {"width": 8},
            "mesh": {
                "shape": {"data": -1, "fsdp": fsdp, "tensor": 1},
                "rules": (("batch", ("data", "fsdp")), ("embed", "fsdp")),
            },
            "train": train.to_dict(),
        }
    )


def task():
    from latentjax.train.state import Task

    def init_state(rng):
        w = nn.Partitioned(jax.random.normal(rng, (8,)), names=("embed",))
        return {"step": jnp.zeros((), jnp.int32), "params": {"w": w}}

    def step(state, frozen, batch, rng):
        del frozen
        noise = jax.random.normal(jax.random.fold_in(rng, state["step"]), (8,))
        target = jnp.mean(batch["image"]) + 0.01 * noise
        w = state["params"]["w"]
        loss = jnp.sum(jnp.square(w - target))
        w = w - 0.1 * 2 * (w - target)
        return {"step": state["step"] + 1, "params": {"w": w}}, {"loss": loss}

    return Task("toy", init_state, {"main": step})


def data(batch: int = 8):
    ds = grain.MapDataset.range(40).shuffle(seed=0).repeat(None)
    ds = ds.map(lambda i: {"image": np.full((2,), i, np.float32)}).batch(batch)
    return iter(ds.to_iter_dataset())


def track_checkpointers() -> list:
    """The checkpointers the loop makes from now on (so the script can wait for their saves)."""
    from latentjax.train.checkpoint import Checkpointer

    made = []
    original = Checkpointer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    Checkpointer.__init__ = init
    return made


class Hanging:
    """Yields from ``it``; after ``n`` items, waits until the checkpoints saved so far are on
    disk, marks ``marker`` and blocks until killed.

    The loop checkpoints the Grain iterator's state, passed through here as JSON bytes (what
    Grain's checkpoint handler expects of an iterator that is not its own)."""

    def __init__(self, it, n: int, marker: Path, checkpointers: list):
        self.it, self.n, self.marker, self.count = it, n, marker, 0
        self.checkpointers = checkpointers

    def __iter__(self):
        return self

    def __next__(self):
        if self.count == self.n:
            for checkpointer in self.checkpointers:
                checkpointer.wait()
            self.marker.write_text("hung")
            threading.Event().wait()  # until killed
        self.count += 1
        return next(self.it)

    def get_state(self) -> bytes:
        return json.dumps(self.it.get_state()).encode()

    def set_state(self, state: bytes) -> None:
        self.it.set_state(json.loads(state))


def hang_in_save_after(step: int, marker: Path) -> None:
    """Makes the save of the data item (Grain's public checkpoint handler) hang for steps above
    ``step``: the step's temporary directory exists, its commit never happens."""
    original = grain.checkpoint.CheckpointHandler.save

    def save(self, directory, *args, **kwargs):
        # directory: CHECKPOINTS/<step>.orbax-checkpoint-tmp-<n>/data
        saving = int(Path(directory).parent.name.split(".")[0])
        if saving > step:
            marker.write_text("hung")
            threading.Event().wait()  # until killed
        return original(self, directory, *args, **kwargs)

    grain.checkpoint.CheckpointHandler.save = save


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--fsdp", type=int, default=1)
    p.add_argument("--hang-after-batches", type=int, default=None)
    p.add_argument("--hang-in-save-after", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--coordinator", default=None)
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    args = p.parse_args()
    if args.coordinator:
        from latentjax.parallel import distributed

        distributed.initialize(args.coordinator, args.num_processes, args.process_id)

    from latentjax import run as run_lib
    from latentjax.parallel import mesh as mesh_lib
    from latentjax.paths import as_path
    from latentjax.train import loop

    workdir = as_path(args.workdir)  # a local directory or gs://…, as latentjax train takes
    c = config(args.steps, args.checkpoint_every, args.fsdp)
    writer = jax.process_index() == 0
    run_lib.check_workdir(workdir, c)
    it = data()
    if args.hang_after_batches is not None:
        it = Hanging(it, args.hang_after_batches, workdir / "hung", track_checkpointers())
    if args.hang_in_save_after is not None:
        hang_in_save_after(args.hang_in_save_after, workdir / "hung")
    mesh = mesh_lib.make_mesh(c.mesh.shape)
    with run_lib.owned(workdir, write=writer):
        state = loop.run(
            task(),
            c,
            workdir,
            it,
            mesh,
            progress=False,
            start=lambda: writer and run_lib.write_config(workdir, c),
        )
    if args.out:
        w = state["params"]["w"]
        np.savez(args.out, w=np.asarray(jax.device_get(w)), step=int(state["step"]))
        pieces = {str(shard.index) for shard in w.addressable_shards}
        print(f"w: {len(pieces)} pieces on {len(w.sharding.device_set)} devices")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)  # not through JAX's shutdown barrier, where a failed peer never arrives
