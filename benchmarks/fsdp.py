"""FSDP memory and pod-size planning, from `latentjax plan` (ahead-of-time compiles on fake CPU
devices; nothing is materialised).

    python -m benchmarks.fsdp [--quick] [--out benchmarks/results/fsdp.json]

Two measurements:

1. **1/n**: the per-device bytes of parameters + EMA + optimiser state of a model's train step
   with FSDP over 1, 2, 4 and 8 devices (mesh data=1, fsdp=n). Ideal is total / n; the table
   shows n x per-device / total and its deviation from 1 (target: within 10%).
2. **Pod plan**: the time `latentjax plan` takes for DiT-XL/2 at 256 px (32x32x4 latents) on a
   v5p-64 slice (32 chips) and on 64 devices, and whether it fits (target: under 10 minutes on
   this machine).

Each plan runs as its own `latentjax plan` process, because the number of fake devices is fixed
when JAX starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIT_XL = "dit/dit_xl2_imagenet256.py"
AE_SD = "ae/kl_f8c4_imagenet256.py"
# (name, config, extra args) swept over 1, 2, 4, 8 devices.
SWEEPS = {
    "DiT-XL/2 256px": (DIT_XL, ["--latent-shape", "32,32,4"]),
    "SD f8c4 autoencoder 256px": (AE_SD, ["--config.train.batch_size=8"]),
}
QUICK_SWEEPS = {
    "DiT-B/2 256px": (
        DIT_XL,
        [
            "--latent-shape",
            "32,32,4",
            "--config.model.hidden_size=768",
            "--config.model.depth=12",
            "--config.model.num_heads=12",
            "--config.train.batch_size=32",
        ],
    ),
}


def _plan(args: list[str]) -> tuple[list[dict], float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plan.json"
        cmd = [sys.executable, "-m", "latentjax", "plan", *args, "--json", str(out)]
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # plan sets its own
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text()), elapsed, proc.stdout


def sweep(config: str, extra: list[str], counts: list[int]) -> dict:
    plans, elapsed, _ = _plan(
        ["--config", config, "--sweep-fsdp", ",".join(map(str, counts)), *extra]
    )
    base = plans[0]["params_and_opt"] * plans[0]["devices"]
    rows = [
        {
            "devices": p["devices"],
            "params_and_opt_bytes": p["params_and_opt"],
            "times_n_over_total": p["params_and_opt"] * p["devices"] / base,
            "temporaries_bytes": p["temporaries"],
        }
        for p in plans
    ]
    worst = max(abs(r["times_n_over_total"] - 1.0) for r in rows)
    return {
        "rows": rows,
        "max_deviation": worst,
        "seconds": elapsed,
        "num_params": plans[0]["num_params"],
    }


def pod(where: list[str]) -> dict:
    plans, elapsed, stdout = _plan(["--config", DIT_XL, "--ae-config", AE_SD, *where])
    p = plans[0]
    return {
        "devices": p["devices"],
        "peak_bytes": p["peak"],
        "flops_per_device": p["flops"],
        "fits": p.get("fits", {}),
        "seconds": elapsed,
        "report": stdout.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="DiT-B/2 sweep only, no pod plans")
    parser.add_argument("--out", default="benchmarks/results/fsdp.json")
    args = parser.parse_args()
    counts = [1, 2, 4, 8]

    sweeps = {
        name: sweep(c, extra, counts)
        for name, (c, extra) in (QUICK_SWEEPS if args.quick else SWEEPS).items()
    }
    print("FSDP: per-device parameters + EMA + optimiser state (ideal: total / n)\n")
    print("| model | parameters | devices | per device (MiB) | n x per device / total |")
    print("|---|---|---|---|---|")
    for name, s in sweeps.items():
        for r in s["rows"]:
            print(
                f"| {name} | {s['num_params'] / 1e6:.1f} M | {r['devices']} | "
                f"{r['params_and_opt_bytes'] / 2**20:,.1f} | {r['times_n_over_total']:.3f} |"
            )
    worst = max(s["max_deviation"] for s in sweeps.values())
    print(f"\nworst deviation from 1/n: {100 * worst:.1f}% (target <= 10%)")

    pods = {}
    if not args.quick:
        for name, where in {
            "v5p-64 (32 chips)": ["--topology", "v5p-64"],
            "64 devices": ["--devices", "64"],
        }.items():
            pods[name] = pod(where)
        print("\nDiT-XL/2 256px, global batch 256: `latentjax plan` on this machine\n")
        print("| slice | devices | peak per device (GiB) | plan time (s) |")
        print("|---|---|---|---|")
        for name, p in pods.items():
            peak = p["peak_bytes"] / 2**30
            print(f"| {name} | {p['devices']} | {peak:.2f} | {p['seconds']:.0f} |")
        for name, p in pods.items():
            print(f"\n{name}:\n{p['report']}")

    result = {
        "sweeps": sweeps,
        "max_deviation_from_1_over_n": worst,
        "pod_plans": {
            k: {kk: vv for kk, vv in v.items() if kk != "report"} for k, v in pods.items()
        },
        "max_pod_plan_seconds": max((p["seconds"] for p in pods.values()), default=None),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
