"""Every benchmark in one run: ``python -m benchmarks [--quick] [--only a,b] [--reuse c]``
(or ``make bench``).

Each section is a script of this folder run in its own process, one after another (so they never
compete for the cores, and the FSDP section can ask for fake devices), writing its JSON under
``benchmarks/results/``. This driver then checks the targets of issue 8 on those numbers and
writes ``benchmarks/BENCHMARKS.md``: date, machine, versions, each section's table, and the
targets met or missed. The file is generated; edit this script, not the file.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


# Column names of sections whose saved output predates their header line.
HEADERS = {
    "peers": "measure | latentjax | reference (PyTorch; matmul rate for GFLOP/s rows) | ratio"
}


def _peers(r: dict) -> list[tuple[str, str, bool]]:
    from benchmarks.peers import rows

    out = []
    for name, _, _, ratio in rows(r):
        value = float(ratio.rstrip("x%")) / (100 if ratio.endswith("%") else 1)
        if "vs torch_eager" in name:
            out.append((f"(1/2) {name}", ratio, value >= 1.5))
        elif "DiT-B/2" in name and "matmul" in name:
            out.append((f"(3) {name}", ratio, value >= 0.40))
    return out


def _sampling(r: dict) -> list[tuple[str, str, bool]]:
    return [
        (
            f"(4) DiT-{row['variant']} {row['steps']}-step jitted sample / {row['steps']} calls",
            f"{row['ratio']:.3f}x",
            row["ratio"] <= 1.1,
        )
        for row in r["rows"]
    ]


def _pipeline(r: dict) -> list[tuple[str, str, bool]]:
    # The digits configs' own pipeline setting over the fastest-consuming train step (the table
    # of the section shows every variant, the slowest included).
    ratio = r["default_ratio"]
    return [
        (
            "(5) input pipeline of the digits configs / fastest train step's consumption",
            f"{ratio:.1f}x",
            ratio >= 5,
        )
    ]


def _checkpoint(r: dict) -> list[tuple[str, str, bool]]:
    frac = r["worst_blocked_over_step"]
    return [("(5) async save blocking / step time (worst state)", f"{frac:.1%}", frac < 0.05)]


def _fsdp(r: dict) -> list[tuple[str, str, bool]]:
    dev = r["max_deviation_from_1_over_n"]
    out = [("(6) FSDP param+opt bytes per device vs 1/n (worst)", f"{dev:.1%}", dev <= 0.10)]
    if r.get("max_pod_plan_seconds") is not None:  # issue 5's bar, measured here too
        s = r["max_pod_plan_seconds"]
        out.append(("(issue 5) `plan` DiT-XL/2 on v5p-64 / 64 devices", f"{s:.0f} s", s < 600))
    return out


# name -> (command after `python`, its JSON, the check of issue 8's targets on that JSON)
SECTIONS: dict[str, tuple[list[str], Callable[[dict], list[tuple[str, str, bool]]]]] = {
    "peers": (["-m", "benchmarks.peers"], _peers),
    "sampling": (["-m", "benchmarks.sampling"], _sampling),
    "pipeline": (["benchmarks/pipeline.py"], _pipeline),
    "checkpoint": (["benchmarks/checkpoint.py"], _checkpoint),
    "fsdp": (["-m", "benchmarks.fsdp"], _fsdp),
    "ops": (["-m", "benchmarks.ops"], lambda r: []),  # explains (1)/(2); no target of its own
    # Issue 24: what TensorBoard writing costs the step; a ratio to read, no target (the
    # machine's noise is larger than the effect of scalars).
    "watch": (["-m", "benchmarks.watch"], lambda r: []),
}
QUICK_ARGS = {
    "peers": ["--quick"],
    "sampling": ["--variants", "S/2", "--steps", "10", "--batch", "1", "--repeats", "1"],
    "pipeline": ["--batches", "40", "--steps", "5"],
    "checkpoint": ["--saves", "2"],
    "fsdp": ["--quick"],
    "ops": ["--quick"],
    "watch": ["--steps", "3", "--rounds", "1"],
}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in (
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "orbax-checkpoint",
        "grain",
        "torch",
        "diffusers",
    ):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def reuse_section(name: str) -> tuple[dict | None, str, float]:
    """A section's JSON and printed table from an earlier run of this driver (``--reuse``)."""
    out, text = RESULTS / f"{name}.json", RESULTS / f"{name}.txt"
    if not out.exists() or not text.exists():
        raise SystemExit(f"--reuse {name}: no earlier result in {RESULTS}; run the section first")
    saved = json.loads(text.read_text())
    print(f"== {name}: reused from {saved['when']}", flush=True)
    return json.loads(out.read_text()), saved["stdout"], saved["elapsed"]


def run_section(name: str, quick: bool) -> tuple[dict | None, str, float]:
    args, _ = SECTIONS[name]
    out = RESULTS / f"{name}.json"
    extra = QUICK_ARGS[name] if quick else []
    cmd = [sys.executable, *args, *extra, "--out", str(out)]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.time() - start
    print(proc.stdout, flush=True)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        return None, proc.stdout + "\n" + proc.stderr[-2000:], elapsed
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    saved = {"stdout": proc.stdout, "elapsed": elapsed, "when": when, "quick": quick}
    (RESULTS / f"{name}.txt").write_text(json.dumps(saved))
    return json.loads(out.read_text()), proc.stdout, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the scripts run")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {list(SECTIONS)}")
    parser.add_argument(
        "--reuse",
        default="",
        help="comma-separated sections to take from benchmarks/results/ instead of running",
    )
    parser.add_argument("--md", default=str(HERE / "BENCHMARKS.md"))
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SECTIONS)
    reuse = set(filter(None, args.reuse.split(",")))
    unknown = (set(names) | reuse) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {list(SECTIONS)}")
    RESULTS.mkdir(exist_ok=True)

    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m benchmarks`" + (" --quick" if args.quick else "") + f" on {when}.",
        f"Machine: {machine()}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".",
        "",
        "CPU figures are relative: read the ratios, measured side by side in this one run.",
        "",
    ]
    checks: list[tuple[str, str, bool]] = []
    for name in names:
        if name in reuse:
            result, table, elapsed = reuse_section(name)
            title = f"## {name} ({elapsed:.0f} s; from an earlier run of this command)"
        else:
            result, table, elapsed = run_section(name, args.quick)
            title = f"## {name} ({elapsed:.0f} s)"
        table = table.strip()
        if name in HEADERS and not table.startswith(HEADERS[name]):
            table = HEADERS[name] + "\n" + table
        lines += [title, "", "```", table, "```", ""]
        if result is None:
            checks.append((f"{name}: the script failed (see its section)", "-", False))
        else:
            checks += SECTIONS[name][1](result)
    lines += ["## Targets (issue 8)", "", "| target | measured | met |", "| --- | --- | --- |"]
    lines += [f"| {n} | {v} | {'yes' if ok else '**no**'} |" for n, v, ok in checks]
    notes = HERE / "notes.md"  # what profiling taught us, written by hand, kept beside the numbers
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    Path(args.md).write_text("\n".join(lines) + "\n")
    print("\n".join(f"{n}: {v} ({'met' if ok else 'MISSED'})" for n, v, ok in checks))
    print(f"wrote {args.md}")


if __name__ == "__main__":
    main()
