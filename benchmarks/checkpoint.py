"""How long does an asynchronous checkpoint save block the training loop? Target: < 5% of a step.

    python benchmarks/checkpoint.py [--saves 5] [--out benchmarks/results/checkpoint.json]

For the full training state (parameters, Adam moments, EMA, step) of the digits DiT and of a
larger DiT (DiT-B/2-sized blocks on 8x8x4 latents: ~130 M parameter floats with the optimiser
state), together with a Grain iterator: the time ``Checkpointer.save`` takes to return (the
loop waits only for this: device buffers are copied, the write goes on in a background thread),
the time until the write is on disk, and the median warm train step of that model at batch 64
(digits) / 8 (large). Prints a table with blocked / step and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import grain
import jax
import numpy as np


def _state_and_step(dit_overrides: list[str], batch_size: int):
    from latentjax.config import load_config
    from latentjax.parallel import mesh as mesh_lib
    from latentjax.train import autoencoder, dit, loop

    ae_config = load_config("ae/digits.py", [])
    dit_config = load_config("dit/digits.py", dit_overrides)
    mesh = mesh_lib.make_mesh(dit_config.mesh.shape)
    rules = tuple(tuple(r) for r in dit_config.mesh.rules)
    ae_stage = autoencoder.AutoencoderStage(ae_config)
    ae_params = jax.jit(ae_stage.init_state)(jax.random.key(0))["params"]["ae"]
    stage = dit.DiTStage(dit_config, ae_stage)
    task = dit.make_task(stage, ae_params, {"shift": 0.0, "scale": 1.0}, mesh)
    _, shardings, init = loop.build_state(task, mesh, rules, jax.random.key(1))
    step = loop.jit_steps(task, shardings, mesh)["diffusion"]
    s = ae_config.data.image_size
    rng = np.random.default_rng(0)
    batch = mesh_lib.global_batch(
        {
            "image": rng.uniform(-1, 1, (batch_size, s, s, 1)).astype(np.float32),
            "label": rng.integers(0, 10, batch_size).astype(np.int32),
        },
        mesh,
    )
    return task, init(jax.random.key(1)), step, batch


def measure(name: str, overrides: list[str], batch_size: int, saves: int, root: Path) -> dict:
    from latentjax.train.checkpoint import Checkpointer

    task, state, step, batch = _state_and_step(overrides, batch_size)
    times = []
    for i in range(6):
        start = time.perf_counter()
        state, metrics = step(state, task.frozen, batch, jax.random.key(i))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times[2:])
    floats = sum(x.size for x in jax.tree.leaves(state))

    it = iter(grain.MapDataset.range(1000).shuffle(seed=0).repeat(None).batch(8).to_iter_dataset())
    next(it)
    ckpt = Checkpointer(root / name, max_to_keep=2)
    blocked, total = [], []
    for i in range(saves):
        state, metrics = step(state, task.frozen, batch, jax.random.key(100 + i))
        jax.block_until_ready(state)  # the loop saves after a step has finished
        start = time.perf_counter()
        ckpt.save(i + 1, state, it)
        blocked.append(time.perf_counter() - start)
        ckpt.wait()
        total.append(time.perf_counter() - start)
    ckpt.close()
    b = statistics.median(blocked)
    return {
        "state_floats": floats,
        "state_mb": floats * 4 / 1e6,
        "step_s": step_s,
        "save_blocks_s": b,
        "save_total_s": statistics.median(total),
        "blocked_over_step": b / step_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--saves", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/checkpoint.json")
    args = p.parse_args()
    cases = {
        "digits DiT (batch 64)": ([], 64),
        "DiT-B-sized (batch 8)": (
            [
                "model.hidden_size=768",
                "model.depth=12",
                "model.num_heads=12",
            ],
            8,
        ),
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (overrides, batch) in cases.items():
            results[name] = measure(name.split()[0], overrides, batch, args.saves, Path(tmp))

    print("\n| state | size | step | save blocks the loop | save on disk | blocked / step |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['state_mb']:.1f} MB | {r['step_s'] * 1e3:.1f} ms | "
            f"{r['save_blocks_s'] * 1e3:.1f} ms | {r['save_total_s'] * 1e3:.0f} ms | "
            f"{100 * r['blocked_over_step']:.1f}% |"
        )
    worst = max(r["blocked_over_step"] for r in results.values())
    verdict = "met" if worst < 0.05 else "NOT met"
    print(f"\nworst {100 * worst:.1f}% of a step (target < 5%): {verdict}")
    out = {
        "cases": results,
        "worst_blocked_over_step": worst,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].platform}",
        "date": time.strftime("%Y-%m-%d"),
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
