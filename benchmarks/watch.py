"""Does watching a run slow its steps? (issue 24: writing happens off the hot path)

    python -m benchmarks.watch [--steps 10] [--rounds 5] [--batch 16] [--out FILE.json]

The digits DiT train step (as ``latentjax train`` jits it), run in blocks of ``--steps`` steps
through the loop's own :class:`~latentjax.train.loop.Monitor` and
:class:`~latentjax.train.watch.Throughput`, logging at **every** step (the worst case: the digits
configs log every 50), three ways timed in turns (one block of each per round, so the machine's
drift falls on all alike):

- ``jsonl``: ``metrics.jsonl`` and the throughput fields only (``train.tensorboard=False``);
- ``tensorboard``: the same plus every scalar to TensorBoard (the default);
- ``tensorboard+images``: the same plus a 336x228 RGB image (the size of the stage-1 sheet of
  8 px digits) queued at every step, PNG-encoded and written by the writer's thread (real runs
  write images only at evaluation steps).

Reported: the median time per step of each and its ratio to ``jsonl``. On this 2-core machine
the writer's thread competes with XLA for the cores, so the ratio is an upper bound of what a
host with spare cores sees.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.checkpoint import _state_and_step
from latentjax.train import loop, watch

SIDES = ("jsonl", "tensorboard", "tensorboard+images")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="steps per timed block")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default="benchmarks/results/watch.json")
    args = p.parse_args()

    task, state, step, batch = _state_and_step([], args.batch)
    rng = jax.random.key(0)
    image = np.random.default_rng(0).integers(0, 256, (336, 228, 3), dtype=np.uint8)
    root = Path(tempfile.mkdtemp(prefix="latentjax-watch-bench-"))
    done = {side: 0 for side in SIDES}
    for side in SIDES:
        (root / side).mkdir()
    writers = {
        side: watch.EventWriter(root / side / "tensorboard", 0, enabled=side != "jsonl")
        for side in SIDES
    }
    monitors = {
        side: loop.Monitor(root / side, "dit", 0, 10**9, "stop", False, writers[side])
        for side in SIDES
    }
    for monitor in monitors.values():
        monitor.lines = False  # no printed line per step: the figures are the point

    def block(side: str) -> float:
        nonlocal state
        monitor, throughput = monitors[side], watch.Throughput(done[side], args.batch)
        throughput.flops["diffusion"] = 1.0
        start = time.perf_counter()
        for _ in range(args.steps):
            done[side] += 1
            n = done[side]
            state, metrics = step(state, task.frozen, batch, rng)
            throughput.step("diffusion")
            monitor.dispatched(n, metrics)
            host = monitor.fetch(n, metrics)
            monitor.log(n, host, throughput.report(n))
            if side == "tensorboard+images":
                writers[side].images(n, {"eval/sheet": image})
        jax.block_until_ready(state)
        return (time.perf_counter() - start) / args.steps

    for side in SIDES:  # warm-up (compilation, first files)
        block(side)
    times = {side: [] for side in SIDES}
    for _ in range(args.rounds):
        for side in SIDES:
            times[side].append(block(side))
    for w in writers.values():
        w.close()  # everything queued is written before the figures are read
    median = {side: statistics.median(t) for side, t in times.items()}
    rows = [
        {"side": side, "seconds_per_step": median[side], "ratio": median[side] / median["jsonl"]}
        for side in SIDES
    ]
    print(f"digits DiT step, batch {args.batch}, logging every step; median of {args.rounds}")
    print("side | ms per step | ratio to jsonl")
    for r in rows:
        print(f"{r['side']} | {1e3 * r['seconds_per_step']:.2f} | {r['ratio']:.3f}x")
    scalars = len(watch.read_scalars(root / "tensorboard" / "tensorboard")["train/loss"])
    print(f"(the tensorboard side wrote {scalars} loss scalars; all were read back)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"rows": rows, "steps": args.steps, "rounds": args.rounds}, indent=1)
    )


if __name__ == "__main__":
    main()
