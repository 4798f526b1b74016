"""How a real-vs-real reference is drawn changes what 1x means (issue 19).

    python -m benchmarks.digits_reference [--out benchmarks/digits_reference]

On the 16 px digits (the demo's size), in the digits feature space (``digits_features``), the
Fréchet distance of 296 real digits (the test split's size) to the rest of the training split,
for sets of 296 drawn four ways, 20 draws each:

- at random, class-stratified (``distribution.heldout_chunks``: what the report card takes now);
- systematically, every fifth digit of each class in the file's order from one of five offsets
  (how the test split is drawn: every sixth, ``data/digits.py``);
- as contiguous runs of 30 digits of each class in the file's order (the file is ordered by
  writer, so a run is a few writers);
- and, once, the test split itself against the whole training split.

Generated samples are independent draws, so the first row is what perfect samples would read.
Its ratio to the test split's distance is what perfect samples read when the test split is the
reference (the report card before 2026-12-03). Writes ``reference.json`` and ``table.md``;
needs no network and no download.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from latentjax.eval import distribution as dist
from latentjax.eval import fid
from latentjax.eval.digits_features import digits_features, training_digits

SIZE = 296  # the test split's
DRAWS = 20
EVERY = 5
RUN = 30  # digits of each class in a contiguous run: 300 in all, trimmed to SIZE


def held_out_sets(labels: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Index sets of ``SIZE`` into the training split (file order), ``DRAWS`` per design."""
    classes = [np.flatnonzero(labels == c) for c in range(10)]
    systematic, contiguous = [], []
    for d in range(DRAWS):
        every = np.sort(np.concatenate([idx[d % EVERY :: EVERY] for idx in classes]))
        systematic.append(every[dist.chunks(labels[every], SIZE)[0]])
        start = (d * 7) % (min(len(idx) for idx in classes) - RUN)
        run = np.sort(np.concatenate([idx[start : start + RUN] for idx in classes]))
        contiguous.append(run[dist.chunks(labels[run], SIZE)[0]])
    return {
        "random (class-stratified): the report card's reference": dist.heldout_chunks(
            labels, SIZE, DRAWS
        ),
        f"systematic (every {EVERY}th of each class), as the test split is drawn": systematic,
        f"contiguous ({RUN} of each class in file order: a few writers)": contiguous,
    }


def measure() -> dict:
    x, labels = training_digits(16)  # the training split in the file's order
    features = digits_features(x)
    test16, _ = training_digits(16, "test")
    rows = {}
    for name, sets in held_out_sets(labels).items():
        values = []
        for held in sets:
            rest = np.setdiff1d(np.arange(len(x)), held)
            stats = fid.statistics(features[rest])
            values.append(fid.frechet_distance_to_features(features[held], *stats))
        rows[name] = {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1))}
    test_fd = dist.frechet_distance(features, digits_features(test16))
    rows["the test split against the whole training split"] = {"mean": test_fd, "sd": None}
    random = next(iter(rows.values()))["mean"]
    return {
        "size": SIZE,
        "draws": DRAWS,
        "rows": rows,
        "perfect_samples_against_the_test_split": random / test_fd,
        "test_split_against_random_chunks": test_fd / random,
    }


def table(result: dict) -> str:
    lines = [
        f"| {result['size']} real digits held out | Fréchet distance to the rest "
        f"(mean ± sd over {result['draws']} draws) | / random |",
        "|---|---|---|",
    ]
    random = next(iter(result["rows"].values()))["mean"]
    for name, row in result["rows"].items():
        spread = f" ± {row['sd']:.2f}" if row["sd"] is not None else ""
        lines.append(f"| {name} | {row['mean']:.2f}{spread} | {row['mean'] / random:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/digits_reference")
    args = parser.parse_args()
    result = measure()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reference.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "table.md").write_text(table(result))
    print(table(result), end="")
    perfect = result["perfect_samples_against_the_test_split"]
    print(f"perfect samples against the test split: {perfect:.2f}x")


if __name__ == "__main__":
    main()
