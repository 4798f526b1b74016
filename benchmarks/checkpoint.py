"""How long does an asynchronous checkpoint save block the training loop? Target: < 5% of a step.

    python benchmarks/checkpoint.py [--saves 7] [--out benchmarks/results/checkpoint.json]

For the full training state (parameters, Adam moments, EMA, step) of the digits DiT and of a
larger DiT (DiT-B/2-sized blocks on 8x8x4 latents: ~130 M parameter floats with the optimiser
state), together with a Grain iterator, side by side for each ``snapshot`` mode of
``Checkpointer``, each used as the training loop uses it:

- "off" (what "auto" does on CPU devices): Orbax's own asynchronous save on the loop's thread,
  which copies the state off the devices before it returns;
- "on" (what "auto" does on accelerators): one compiled copy of the state (into pinned host
  memory where the devices have it; on CPU devices into device memory) dispatched
  asynchronously and handed to a background thread that calls Orbax.

Columns:

- blocks: how much later the state is free for the loop's next, donating step: the time from
  calling ``save`` until a donating no-op could take the state over, less that no-op alone (a
  copy still running when ``save`` returns is counted);
- loop cost: how much longer ``save`` plus the next K train steps take than K train steps
  without a save (K is chosen so the write ends within them; on this 2-core CPU the write's own
  work competes with the steps, so this is an upper bound of what a many-core host would see);
- on disk: the time from ``save`` to the write being complete, with the loop idle.

The table prints each against the median warm train step at batch 64 (digits) / 8 (large); the
target is checked on the mode "auto" uses on this machine. On CPU the snapshot is not the
default: there device memory is host memory, and the copy's memory traffic costs the loop about
as much as it saves (the measurements behind that are in ``benchmarks/notes.md``).
"""

from __future__ import annotations

import argparse
import json
import math
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
    from latentjax.factory import latent_shape
    from latentjax.parallel import mesh as mesh_lib
    from latentjax.train import autoencoder, dit
    from latentjax.train.state import build_state, jit_steps

    ae_config = load_config("ae/digits.py", [])
    dit_config = load_config("dit/digits.py", dit_overrides)
    mesh = mesh_lib.make_mesh(dit_config.mesh.shape)
    rules = tuple(tuple(r) for r in dit_config.mesh.rules)
    ae_stage = autoencoder.AutoencoderStage(ae_config)
    ae_params = jax.jit(ae_stage.init_state)(jax.random.key(0))["params"]["ae"]
    stage = dit.DiTStage(dit_config, ae_stage.ae, latent_shape(ae_config))
    task = dit.make_task(stage, ae_params, {"shift": 0.0, "scale": 1.0}, mesh)
    _, shardings, init = build_state(task.init_state, mesh, rules, jax.random.key(1))
    step = jit_steps(task, shardings, mesh)["diffusion"]
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


MODES = ("off", "on")


def measure(name: str, overrides: list[str], batch_size: int, saves: int, root: Path) -> dict:
    from latentjax.train.checkpoint import Checkpointer

    task, state, step, batch = _state_and_step(overrides, batch_size)
    key = iter(range(10**6))

    def steps(n: int) -> float:
        """Runs ``n`` steps; returns the time of the last one (dispatch to result)."""
        nonlocal state
        for _ in range(n):
            start = time.perf_counter()
            state, metrics = step(state, task.frozen, batch, jax.random.key(next(key)))
            jax.block_until_ready(state)
        return time.perf_counter() - start

    times = [steps(1) for _ in range(6)]
    step_s = statistics.median(times[2:])
    # What the next train step does to the state first: take it over (donation), which waits
    # until every program still reading it (an asynchronous snapshot copy) is done.
    take = jax.jit(lambda s: s, donate_argnums=0)

    def take_over() -> None:
        nonlocal state
        state = take(state)
        jax.block_until_ready(state)

    take_over()
    alone = []
    for _ in range(20):
        start = time.perf_counter()
        take_over()
        alone.append(time.perf_counter() - start)
    take_s = statistics.median(alone)
    floats = sum(x.size for x in jax.tree.leaves(state))
    it = iter(grain.MapDataset.range(1000).shuffle(seed=0).repeat(None).batch(8).to_iter_dataset())
    next(it)

    # Long enough for the write to finish while the loop trains (measured with mode "off").
    ckpt = Checkpointer(root / f"{name}-probe", snapshot="off")
    start = time.perf_counter()
    ckpt.save(1, state, it)
    ckpt.wait()
    ckpt.close()
    follow = max(3, min(12, math.ceil(2 * (time.perf_counter() - start) / step_s)))

    out = {"state_floats": floats, "state_mb": floats * 4 / 1e6, "step_s": step_s}
    out["following_steps"] = follow
    for mode in MODES:
        ckpt = Checkpointer(root / f"{name}-{mode}", max_to_keep=2, snapshot=mode)
        ckpt.save(0, state, it)  # compiles a snapshot copy once, as a first save does
        ckpt.wait()
        blocked, called, cost, total = [], [], [], []
        for i in range(saves):
            start = time.perf_counter()
            steps(follow)
            plain = time.perf_counter() - start
            steps(1)
            start = time.perf_counter()
            ckpt.save(2 * i + 1, state, it)
            called.append(time.perf_counter() - start)
            take_over()
            blocked.append(time.perf_counter() - start - take_s)
            steps(follow)
            cost.append(time.perf_counter() - start - plain)
            ckpt.wait()
            steps(1)
            start = time.perf_counter()  # the write alone, with the loop idle
            ckpt.save(2 * i + 2, state, it)
            ckpt.wait()
            total.append(time.perf_counter() - start)
        ckpt.close()
        out[mode] = {
            "save_blocks_s": statistics.median(blocked),
            "save_call_s": statistics.median(called),
            "loop_cost_s": statistics.median(cost),
            "save_total_s": statistics.median(total),
            "blocked_over_step": statistics.median(blocked) / step_s,
            "loop_cost_over_step": statistics.median(cost) / step_s,
        }
    # The numbers of the mode "auto" takes here, at the top level (what the target is checked on).
    auto = "off" if jax.devices()[0].platform == "cpu" else "on"
    out["auto_is"] = auto
    out.update({k: out[auto][k] for k in ("save_blocks_s", "save_total_s", "blocked_over_step")})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--saves", type=int, default=7, help="per mode (at most 3 for the large state)")
    p.add_argument("--out", default="benchmarks/results/checkpoint.json")
    args = p.parse_args()
    cases = {
        "digits DiT (batch 64)": ([], 64, args.saves),
        "DiT-B-sized (batch 8)": (
            [
                "model.hidden_size=768",
                "model.depth=12",
                "model.num_heads=12",
            ],
            8,
            min(args.saves, 3),  # 1.5 s steps: each save costs about 40 s per mode
        ),
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (overrides, batch, saves) in cases.items():
            results[name] = measure(name.split()[0], overrides, batch, saves, Path(tmp))

    print(
        "\n| state | size | step | snapshot | save returns | blocks the loop | blocked / step "
        "| loop cost (save + K steps - K steps) | cost / step | save on disk |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        for mode in MODES:
            m = r[mode]
            print(
                f"| {name} | {r['state_mb']:.1f} MB | {r['step_s'] * 1e3:.1f} ms | "
                f"{mode}{' (auto)' if mode == r['auto_is'] else ''} | "
                f"{m['save_call_s'] * 1e3:.1f} ms | {m['save_blocks_s'] * 1e3:.1f} ms | "
                f"{100 * m['blocked_over_step']:.1f}% | "
                f"{m['loop_cost_s'] * 1e3:.0f} ms (K={r['following_steps']}) | "
                f"{100 * m['loop_cost_over_step']:.0f}% | {m['save_total_s'] * 1e3:.0f} ms |"
            )
    for name, r in results.items():
        off, on = r["off"]["save_blocks_s"], r["on"]["save_blocks_s"]
        print(
            f"{name}: the snapshot ('on') blocks {on * 1e3:.0f} ms, Orbax alone ('off') "
            f"{off * 1e3:.0f} ms; 'auto' is '{r['auto_is']}' here"
        )
    worst = max(r["blocked_over_step"] for r in results.values())
    verdict = "met" if worst < 0.05 else "NOT met"
    print(f"\nworst {100 * worst:.1f}% of a step with snapshot 'auto' (target < 5%): {verdict}")
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
