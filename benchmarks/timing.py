"""Timing of callables that are compared with each other, on a shared machine.

This 2-core machine is a virtual one whose speed drifts by 10 to 30% over tens of seconds (other
tenants of its host). Timing one callable's repeats and then the other's puts each in its own
spell, and the ratio of the two takes the drift for a difference (one sampling A/B read 1.33x
run after run and 0.99x interleaved). :func:`interleaved` times the callables in turns, one
call of each per round, so a slow spell falls on all of them alike.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import jax


def interleaved(fns: dict[Hashable, Callable[[], object]], repeats: int) -> dict[Hashable, float]:
    """Median wall time of each ``fn()`` until its result is ready (``jax.block_until_ready``;
    a function that returns no arrays must itself block until its work is done) over
    ``repeats`` rounds that call every ``fn`` once, in turn, after one warm-up call of each."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times: dict[Hashable, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def report(
    path: str | Path,
    batch: Sequence[int],
    rows: dict[str, dict],
    header: Sequence[str],
    cells: Callable[[str, dict], Sequence[str]],
) -> None:
    """Write ``{"batch", "device", "rows"}`` to ``path`` as JSON and print the rows as a markdown
    table: ``header`` names the columns, ``cells(name, row)`` gives one row's cells."""
    out = {"batch": list(batch), "device": jax.devices()[0].device_kind, "rows": rows}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2))
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for name, row in rows.items():
        print("| " + " | ".join(cells(name, row)) + " |")
