"""What the digits' feature space sees, and what it should not: each candidate judge's reading
of known changes to real digits, in standard deviations of its own real-vs-real distance
(issue 19).

    python -m benchmarks.digits_judge [--demo runs/demo] [--out benchmarks/digits_judge]

A judge is the hidden layer of ``latentjax/eval/digits_features.py``'s network, fitted with a
floor on the pixels' standard deviation and a soft threshold of the pixels (both on the 0..16
scale of the 8x8 originals; see ``feature_space``). For each, on the 16 px training digits (the
demo's size): 20 random class-stratified splits into 247 judged and 1,254 reference digits
give the real-vs-real Fréchet distance's mean and spread; each change is applied to the judged
part of the same splits, and its reading is (mean distance - real-vs-real mean) / real-vs-real
standard deviation. The changes: Gaussian pixel noise (std 16/255), a blur (sigma 1 px), a
one-pixel shift, one class only (a collapsed mode), contrast x 0.9 (things a judge must see)
and a haze of 1, 2, 4, 8 or 16/255 on every black pixel (a decoder's faint grey; the 8x8
originals have 17 levels, 16/255 apart, so the first three are below the data's precision).
With ``--demo DIR`` (a ``latentjax demo`` run) each judge also reads the demo's
reconstructions and samples as ``distribution.report`` does, as a multiple of real-vs-real.
Writes ``judges.json`` and ``table.md`` (readings in sd, the demo's as ratios); needs no
network and no download. The committed demo ratios were taken with the test split as
real-vs-real; ``distribution.report`` now holds out random chunks of the training split
(``benchmarks/digits_reference.py``), so a run now gives smaller ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from latentjax.eval import distribution as dist
from latentjax.eval.digits_features import (
    GREY_THRESHOLD,
    PIXEL_STD_FLOOR,
    feature_space,
    training_digits,
)

# name -> (pixel std floor, soft threshold), both on the 0..16 scale.
JUDGES = {
    "v1: floor 0.5, no threshold": (0.5, 0.0),
    "floor 1": (1.0, 0.0),
    "floor 2": (2.0, 0.0),
    "v2 (digits_features now): floor 0.5, threshold 0.5": (PIXEL_STD_FLOOR, GREY_THRESHOLD),
    "floor 1, threshold 0.5": (1.0, 0.5),
    "floor 1, threshold 1": (1.0, 1.0),
}
SPLITS = 20
JUDGED = 247
SIZE = 16


def changes(x: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each change applied to uint8 digits ``x`` [N, S, S, 1]."""
    f = x.astype(np.float64)
    out = {
        "noise 16/255": f + rng.normal(0.0, 16.0, f.shape),
        "blur 1 px": ndimage.gaussian_filter(f, sigma=(0, 1, 1, 0)),
        "shift 1 px": np.pad(f, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1],
        "one class": f[rng.choice(np.flatnonzero(labels == 3), len(f))],
        "contrast 0.9": f * 0.9,
    }
    for h in (1, 2, 4, 8, 16):
        hazy = f.copy()
        hazy[x == 0] = h
        out[f"haze {h}/255"] = hazy
    return {k: np.clip(np.round(v), 0, 255).astype(np.uint8) for k, v in out.items()}


def splits(labels: np.ndarray, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``SPLITS`` class-stratified (judged, reference) index pairs, ``JUDGED`` judged."""
    out = []
    for _ in range(SPLITS):
        judged = []
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            judged.append(rng.choice(idx, round(JUDGED * len(idx) / len(labels)), replace=False))
        judged = np.concatenate(judged)[:JUDGED]
        out.append((judged, np.setdiff1d(np.arange(len(labels)), judged)))
    return out


def sensitivity(features, x, labels, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    base, moved = [], {}
    for judged, reference in splits(labels, rng):
        ref = features(x[reference])
        base.append(dist.frechet_distance(ref, features(x[judged])))
        for name, images in changes(x[judged], labels[judged], rng).items():
            moved.setdefault(name, []).append(dist.frechet_distance(ref, features(images)))
    mean, sd = float(np.mean(base)), float(np.std(base, ddof=1))
    return {
        "real_vs_real_mean": mean,
        "real_vs_real_sd": sd,
        **{name: (float(np.mean(d)) - mean) / sd for name, d in moved.items()},
    }


def demo_ratios(features, demo: Path) -> dict[str, float]:
    """The demo's reconstructions' and samples' Fréchet ratios in this judge."""
    from benchmarks.guidance.haze import demo_sets

    real, recon, samples, labels = demo_sets(str(demo))
    figures = dist.report(
        real["train_images"], real["train_labels"], real["test_images"], real["test_labels"],
        samples, labels, train_reconstructions=recon, features=features,
    )  # fmt: skip
    return {
        "recon_frechet_ratio": figures["recon_frechet_ratio"],
        "samples_frechet_ratio": figures["samples_frechet_ratio"],
        "samples_class_variance_ratio": figures["samples_class_variance_ratio"],
        "samples_recall": figures["samples_recall"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default=None, help="a `latentjax demo` run directory")
    parser.add_argument("--out", default="benchmarks/digits_judge")
    args = parser.parse_args()
    x, labels = training_digits(SIZE)
    rows = {}
    for name, (floor, threshold) in JUDGES.items():
        features = feature_space(floor, threshold)
        row = {"floor": floor, "threshold": threshold, **sensitivity(features, x, labels)}
        if args.demo:
            row |= demo_ratios(features, Path(args.demo))
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "judges.json").write_text(json.dumps(rows, indent=2))
    text = table(rows)
    (out / "table.md").write_text(text + "\n")
    print(text)


def table(rows: dict[str, dict]) -> str:
    """The judges side by side: readings in sd of real-vs-real, the demo's as ratios."""
    first = next(iter(rows.values()))
    changed = [
        k for k in first if k.startswith(("noise", "blur", "shift", "one", "contrast", "haze"))
    ]
    demo = [k for k in ("recon_frechet_ratio", "samples_frechet_ratio") if k in first]
    head = ["judge", "real-vs-real (mean ± sd)", *changed]
    head += [{"recon_frechet_ratio": "demo recon", "samples_frechet_ratio": "demo samples"}[k]
             for k in demo]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, row in rows.items():
        cells = [name, f"{row['real_vs_real_mean']:.2f} ± {row['real_vs_real_sd']:.2f}"]
        cells += [f"{row[k]:.2g}" if abs(row[k]) < 10 else f"{row[k]:.0f}" for k in changed]
        cells += [f"{row[k]:.2f}x" for k in demo]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
