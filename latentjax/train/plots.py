"""A finished (or running) run at a glance without TensorBoard: its ``metrics.jsonl`` as PNG
figures, the losses and evaluation metrics in one, throughput and utilisation in another.

matplotlib is an optional dependency (``pip install 'latentjax[plot]'``); without it
:func:`plot_run` is a one-line error naming that extra.
"""

from __future__ import annotations

import math
from typing import Any

from latentjax import run as run_lib
from latentjax.errors import LatentjaxError, WorkdirError
from latentjax.paths import Path, absolute, as_path
from latentjax.train.loop import read_metrics
from latentjax.train.watch import PERF_KEYS

LOSSES_FILE = "losses.png"
THROUGHPUT_FILE = "throughput.png"
# Bookkeeping fields, not curves anyone reads.
_NOT_PLOTTED = ("nonfinite", "skipped_updates")


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [
        (r["step"], float(r[key]))
        for r in records
        if isinstance(r.get(key), int | float) and math.isfinite(r[key])
    ]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _figure(records, keys: list[str], title: str, path: Path, labels: dict[str, str]) -> Path:
    from matplotlib.figure import Figure

    ncol = min(3, len(keys))
    nrow = math.ceil(len(keys) / ncol)
    fig = Figure(figsize=(4.2 * ncol, 2.8 * nrow), layout="constrained")
    fig.suptitle(title)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        steps, values = _series(records, key)
        ax.plot(steps, values, marker="." if len(steps) < 50 else None, lw=1)
        ax.set_title(labels.get(key, key), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    run_lib.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return path


def plot_run(workdir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Writes ``losses.png`` (every logged metric of the step and of evaluation) and
    ``throughput.png`` (steps/s, examples/s, data wait, FLOP/s, MFU and memory where logged) of
    the run in ``workdir`` into ``out`` (default ``WORKDIR/plots``). -> the files written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise LatentjaxError(
            "latentjax plot needs matplotlib: pip install 'latentjax[plot]'"
        ) from e
    workdir = as_path(workdir)
    path = workdir / run_lib.METRICS_FILE
    if not path.is_file():
        raise WorkdirError(f"{workdir} holds no {run_lib.METRICS_FILE}; is it a training run?")
    records = read_metrics(path)
    if not records:
        raise WorkdirError(f"{path} holds no logged step yet")
    keys = list(dict.fromkeys(k for r in records for k in r if k != "step"))
    plotted = [k for k in keys if _series(records, k)[0]]
    losses = [
        k
        for k in plotted
        if k not in PERF_KEYS and k not in _NOT_PLOTTED and not k.startswith("compile_seconds")
    ]
    perf = [k for k in PERF_KEYS if k in plotted]
    out = workdir / "plots" if out is None else as_path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    name = absolute(workdir).name
    if losses:
        written.append(_figure(records, losses, f"{name}: metrics", out / LOSSES_FILE, {}))
    if perf:
        labels = {
            "data_wait_fraction": "data wait (fraction of step time)",
            "mfu": "MFU (of the chip's peak bf16 FLOP/s)",
            "flops_per_step": "FLOPs per step per device",
            "flops_per_s": "FLOP/s per device",
        }
        written.append(_figure(records, perf, f"{name}: throughput", out / THROUGHPUT_FILE, labels))
    return written
