"""Stage 2's report card: generation judged as a distribution (DESIGN.md, principle 7).

``latentjax eval --workdir DIT`` samples a stage-2 run at one or more guidance settings and judges
every set of samples with ``distribution.report`` beside real images held out of the training
split (real-vs-real: drawn at random, as samples are), the real test split, and the
autoencoder's reconstructions of the held-out images (the ceiling: stage 2 generates latents,
and the decoder turns even perfect latents into reconstructions, not originals). It writes
``OUT/report.json``, ``OUT/report.png`` (each figure for every set side by side) and,
for several settings, ``OUT/guidance_sweep.png`` (fidelity against distribution distance, one
point per setting, the run's default marked).

The feature space depends on the dataset: the embedded digits are judged in their own fixed space
(``digits_features``, with the digits classifier for "recognised"); any other dataset needs a
network: LPIPS's VGG16 (``--vgg16 DIR``, ``eval/vgg_features.py``: offline, no FID) or the FID
Inception network (``--inception WEIGHTS``). With Inception, the Fréchet distance is FID,
precision/recall are computed on Inception's pool features with k = 3, and sFID on its spatial
``mixed_6/conv`` features, as ADM's evaluator does (Dhariwal & Nichol 2021). FID and sFID here
are computed at the held-out split's size, against the statistics of the training split without
a held-out chunk, and averaged over chunks and held-out chunks (``distribution.report``): they
are comparable with the real-vs-real figures beside them, not with FID-50K figures of papers.

This module does not sample: the caller passes ``sample(labels, setting) -> uint8 images`` (the
command wraps ``latentjax.generate``), so the judging can be tested on any images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from latentjax.data.pipeline import split_arrays
from latentjax.errors import LatentjaxError
from latentjax.eval import distribution
from latentjax.eval.digits_classifier import DigitsClassifier
from latentjax.eval.digits_features import NAME as DIGITS_SPACE
from latentjax.eval.digits_features import digits_features
from latentjax.eval.images import pyplot, to_uint8
from latentjax.paths import Path, as_path
from latentjax.run import write_json

DIGITS_DATASET = "latentjax_digits"
FIGURES = (
    "recognised",
    "precision",
    "recall",
    "class_variance_ratio",
    "class_variance_ratio_min",
    "frechet",
    "frechet_ratio",
    "sfid",
    "sfid_ratio",
    "chunks",
)
SETS = {
    "real_heldout": "real, held out of training",
    "real_test": "real test split",
    "recon": "reconstructions",
    "samples": "samples",
}

Sampler = Callable[[np.ndarray, dict[str, Any]], np.ndarray]  # (labels [N], setting) -> uint8


def real_sets(data, held_out: str | None = None) -> dict[str, np.ndarray]:
    """The real images of a run's ``data`` config section as uint8: ``train_images``,
    ``train_labels`` (the reference the sets are judged against) and ``test_images``,
    ``test_labels`` (held out: real-vs-real; split ``held_out``, default ``data.eval_split``), in
    dataset order."""
    out = {}
    for name, split in (("train", data.train_split), ("test", held_out or data.eval_split)):
        arrays = split_arrays(data, split)
        out[f"{name}_images"] = to_uint8(np.asarray(arrays["image"]))
        out[f"{name}_labels"] = np.asarray(arrays["label"], np.int64)
    return out


def judged_labels(real: dict[str, np.ndarray], num: int, num_classes: int) -> np.ndarray:
    """The ``num`` labels samples are asked for: the classes of the held-out split in turn (the
    classes the per-class figures are taken over) that the model knows and the training split
    holds (the samples of a class are judged against its real training images; a class the
    model knows but the held-out split lacks, such as the photo crops' held-out scenes, is not
    asked for). A class-free model (``num_classes`` 0) takes label 0."""
    if num <= 0:
        raise LatentjaxError(f"the number of samples must be positive, got {num}")
    if num_classes <= 0:
        return np.zeros(num, np.int32)
    held_out = np.unique(real["test_labels"])
    classes = held_out[(held_out >= 0) & (held_out < num_classes)]
    if classes.size == 0:
        raise LatentjaxError(
            f"the held-out split has no class of the model's {num_classes}: nothing to judge"
        )
    classes = np.intersect1d(classes, np.unique(real["train_labels"]))
    if classes.size == 0:
        raise LatentjaxError(
            f"the held-out split's classes ({', '.join(map(str, held_out))}) are not in the "
            "training split, so samples of them have no real images to be judged against; "
            "give --split a split of the training classes (e.g. the photo crops' val)"
        )
    return np.resize(classes, num).astype(np.int32)  # in turn: 0, 1, ..., 0, 1, ...


class CachedFeatures:
    """``features`` computed once per distinct image (keyed by a digest of its bytes): a sweep
    judges the same training, test and reconstructed images at every setting, and the report
    card's held-out chunks are subsets of the training split. ``features`` may return a dict of
    feature arrays from one pass (Inception's pool and spatial features); ``view(key)`` is then
    the callable of one of them."""

    def __init__(self, features: Callable[[np.ndarray], Any]):
        self.features = features
        self._cache: dict[bytes, Any] = {}

    def _get(self, images: np.ndarray):
        images = np.ascontiguousarray(images)
        keys = [hashlib.sha256(image.tobytes()).digest() for image in images]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            where = {k: i for i, k in reversed(list(enumerate(keys)))}
            out = self.features(images[[where[k] for k in missing]])
            for j, key in enumerate(missing):
                self._cache[key] = (
                    {name: np.asarray(v[j], np.float64) for name, v in out.items()}
                    if isinstance(out, dict)
                    else np.asarray(out[j], np.float64)
                )
        rows = [self._cache[k] for k in keys]
        if rows and isinstance(rows[0], dict):
            return {name: np.stack([r[name] for r in rows]) for name in rows[0]}
        return np.stack(rows)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._get(images)

    def view(self, key: str) -> Callable[[np.ndarray], np.ndarray]:
        return lambda images: self._get(images)[key]


class FeatureSpace(NamedTuple):
    """How a dataset's images are judged: ``features`` (uint8 images -> [N, D]), a
    ``classifier`` for "recognised" (or None) and ``spatial`` features for sFID (or None)."""

    name: str
    features: Callable[[np.ndarray], np.ndarray]
    classifier: Callable | None = None
    spatial: Callable[[np.ndarray], np.ndarray] | None = None


def feature_space(dataset: str, inception=None, vgg16=None) -> FeatureSpace:
    """How to judge ``dataset``: Inception's features (``inception``: uint8 images ->
    {"pool": [N, 2048], "spatial": [N, 2023]}, one pass) with no classifier; VGG16's
    (``vgg16``: uint8 images -> [N, 512], ``eval/vgg_features.py``) with a logistic regression
    on them for "recognised"; or, for the digits, their own space and classifier. A dataset that
    is not the digits needs one of the two networks."""
    if inception is not None and vgg16 is not None:
        raise LatentjaxError(
            "give --inception or --vgg16, not both: samples are judged in one space"
        )
    if inception is not None:
        cached = CachedFeatures(inception)
        return FeatureSpace("inception", cached.view("pool"), None, cached.view("spatial"))
    if vgg16 is not None:
        from latentjax.eval.vgg_features import classifier_of

        cached = CachedFeatures(vgg16)
        return FeatureSpace("vgg16", cached, classifier_of(cached))
    if dataset == DIGITS_DATASET:
        return FeatureSpace(DIGITS_SPACE, CachedFeatures(digits_features), DigitsClassifier)
    raise LatentjaxError(
        f"judging samples of {dataset!r} needs a feature space: --inception WEIGHTS (pytorch-fid's "
        "pt_inception weights; FID) or --vgg16 DIR (LPIPS's VGG16, a `latentjax convert lpips` "
        "directory; offline); only the embedded digits have a space of their own"
    )


def judging_space(dataset: str, inception: str | None, vgg16: str | None = None):
    """The feature space stage 2's samples of ``dataset`` are judged in
    (``generation.feature_space``), with the FID Inception network of the weights file
    ``inception`` (pool features, and spatial ones for sFID) or LPIPS's VGG16 in the directory
    ``vgg16``, when given. Raises in one line, before anything is sampled, for a missing file, two
    networks, or a dataset with no space of its own."""
    if inception and vgg16:
        raise LatentjaxError(
            "give --inception or --vgg16, not both: samples are judged in one space"
        )
    net = vgg = None
    if inception:
        if not as_path(inception).is_file():
            raise LatentjaxError(f"--inception: no such file {inception}")
        from latentjax.convert.inception import load_inception, uint8_features

        net = uint8_features(load_inception(inception, spatial=True))
    if vgg16:
        from latentjax.eval.vgg_features import vgg16_features

        vgg = vgg16_features(vgg16)
    return feature_space(dataset, net, vgg)


def references(data, generator, batch_size: int, held_out: str | None = None):
    """The references samples are judged beside: the real splits of ``data``
    (``generation.real_sets``, with the held-out split ``held_out``) and the generator's
    autoencoder's reconstructions of the training split (uint8; ``distribution.report`` takes
    those of its held-out chunks as the ceiling). Every process takes part (the autoencoder may
    be sharded)."""
    from latentjax.eval.autoencoder import reconstruct

    real = real_sets(data, held_out)
    x = real["train_images"].astype(np.float32) / 127.5 - 1.0
    recon = reconstruct(generator.stage.ae, generator.frozen["ae"], x, batch_size)
    return real, to_uint8(recon)


def _split(flat: dict[str, Any]) -> dict[str, Any]:
    """``distribution.report``'s flat dict -> {set: {figure: value}} and the shared sizes."""
    out: dict[str, Any] = {name: {} for name in SETS}
    for key, value in flat.items():
        name = next((s for s in SETS if key.startswith(s + "_")), None)
        if name is None:
            out[key] = value
        else:
            out[name][key.removeprefix(name + "_")] = value
    return out


def judge(
    real: dict[str, np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    reconstructions: np.ndarray | None,
    features: Callable,
    classifier: Callable | None,
    k: int = 3,
    spatial_features: Callable | None = None,
) -> dict[str, Any]:
    """One set of samples (uint8 ``images`` [N, H, W, C], asked for ``labels`` [N]) judged with
    ``distribution.report`` beside real images held out of the training split (the reference),
    the real test split and the ``reconstructions`` of the training split's images (and sFID in
    ``spatial_features``, when given). -> {real_heldout: {...}, real_test: {...}, recon: {...}
    (when given), samples: {...}, and the sizes}."""
    flat = distribution.report(
        real["train_images"],
        real["train_labels"],
        real["test_images"],
        real["test_labels"],
        images,
        labels,
        train_reconstructions=reconstructions,
        features=features,
        classifier=classifier,
        spatial_features=spatial_features,
        k=k,
    )
    out = _split(flat)
    if reconstructions is None:
        del out["recon"]
    return out


def evaluate(
    sample: Sampler,
    real: dict[str, np.ndarray],
    reconstructions: np.ndarray | None,
    labels: np.ndarray,
    settings: Sequence[dict[str, Any]],
    *,
    features: Callable,
    classifier: Callable | None,
    default: dict[str, Any] | None = None,
    k: int = 3,
    spatial_features: Callable | None = None,
    on_point: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Samples ``labels`` at each of ``settings`` (e.g. ``{"cfg_scale": 1.5}``) and judges them.

    -> (report, images per setting). The report: the references ``real_heldout``,
    ``real_test`` and ``recon`` (the same at every setting; ``reconstructions`` are those of the
    training split), ``points`` (per setting: the setting's keys and the samples'
    figures), ``default`` (the run's own setting, marked in the sweep plot) and the sizes.
    ``on_point(point)`` is called as each point is done (progress lines)."""
    if not settings:
        raise LatentjaxError("no sampling setting to evaluate")
    report: dict[str, Any] = {"default": dict(default or {}), "points": []}
    all_images = []
    for setting in settings:
        images = sample(labels, setting)
        judged = judge(
            real, images, labels, reconstructions, features, classifier, k, spatial_features
        )
        point = {**setting, **judged.pop("samples")}
        report["points"].append(point)
        report.update(judged)  # the references and sizes: the same at every setting
        all_images.append(images)
        if on_point is not None:
            on_point(point)
    return report, all_images


def setting_label(point: dict[str, Any]) -> str:
    """A short label of a point's guidance setting: "cfg 1.5" or "cfg 2 [0.2, 0.8]"."""
    text = f"cfg {point['cfg_scale']:g}"
    interval = point.get("guidance_interval")
    if interval is not None and tuple(interval) != (0.0, 1.0):
        text += f" [{interval[0]:g}, {interval[1]:g}]"
    return text


def setting_tag(point: dict[str, Any]) -> str:
    """The same for file names: "cfg1.5" or "cfg2_t0.2-0.8"."""
    text = f"cfg{point['cfg_scale']:g}"
    interval = point.get("guidance_interval")
    if interval is not None and tuple(interval) != (0.0, 1.0):
        text += f"_t{interval[0]:g}-{interval[1]:g}"
    return text


def is_default(point: dict[str, Any], default: dict[str, Any]) -> bool:
    return bool(default) and all(
        np.allclose(point.get(k), v) if k != "sampler" else point.get(k) == v
        for k, v in default.items()
    )


def plot_report(report: dict[str, Any], path: str | Path) -> Path | None:
    """Bars per figure: real images held out of training (the reference), the real test split,
    the reconstructions and each setting's samples. -> the PNG, or None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    rows = [("real, held out", report["real_heldout"]), ("real test", report["real_test"])]
    if "recon" in report:
        rows.append(("reconstructions", report["recon"]))
    rows += [(f"samples, {setting_label(p)}", p) for p in report["points"]]
    panels = [
        ("fidelity", ["recognised", "precision"]),
        ("coverage and diversity", ["recall", "class_variance_ratio"]),
        ("Fréchet distance / real-vs-real", ["frechet_ratio", "sfid_ratio"]),
    ]
    panels = [(t, [f for f in fs if f in report["real_test"]]) for t, fs in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.5 + 0.45 * len(rows)))
    colors = ["0.3", "0.6", "tab:blue"] + [
        plt.cm.viridis(x) for x in np.linspace(0.1, 0.9, len(rows))
    ]
    for ax, (title, figures) in zip(axes, panels, strict=True):
        height = 0.8 / len(figures)
        for j, figure in enumerate(figures):
            y = np.arange(len(rows)) + (j - (len(figures) - 1) / 2) * height
            values = [row[figure] for _, row in rows]
            ax.barh(y, values, height, color=colors[: len(rows)], alpha=1.0 - 0.45 * j)
            for yi, v in zip(y, values, strict=True):
                ax.text(v, yi, f" {v:.2f}" + (f" {figure}" if len(figures) > 1 else ""),
                        va="center", fontsize=7)  # fmt: skip
        ax.set_yticks(np.arange(len(rows)), [name for name, _ in rows] if ax is axes[0] else [])
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.margins(x=0.35)
    axes[-1].axvline(1.0, color="0.3", lw=0.8, ls=":")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return as_path(path)


def plot_sweep(report: dict[str, Any], path: str | Path) -> Path | None:
    """Fidelity (recognised, or precision without a classifier) against the Fréchet distance
    relative to real-vs-real, a point per setting joined in order, the references as markers and
    the default ringed; beside it, diversity (recall, within-class variance) per setting.
    -> the PNG, or None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    points, ref = report["points"], report["real_heldout"]
    fidelity = "recognised" if "recognised" in ref else "precision"
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    x = [p["frechet_ratio"] for p in points]
    y = [p[fidelity] for p in points]
    ax.plot(x, y, "-o", color="tab:purple", label="samples")
    for p, xi, yi in zip(points, x, y, strict=True):
        ax.annotate(setting_label(p), (xi, yi), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)  # fmt: skip
        if is_default(p, report.get("default", {})):
            ax.plot(xi, yi, "o", ms=14, mfc="none", mec="tab:red", mew=1.5, label="default")
    refs = [
        ("real, held out (1x)", ref, "s", "0.3"),
        ("real test", report["real_test"], "^", "0.6"),
    ]
    if "recon" in report:
        refs.append(("reconstructions (ceiling)", report["recon"], "D", "tab:blue"))
    for name, r, marker, color in refs:
        ax.plot(r["frechet_ratio"], r[fidelity], marker, color=color, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("Fréchet distance / real-vs-real (log; lower is closer)")
    ax.set_ylabel(fidelity)
    ax.set_title("fidelity against distribution distance", fontsize=10)
    ax.legend(fontsize=8)
    ticks = np.arange(len(points))
    for figure, marker in (("recall", "o"), ("class_variance_ratio", "s")):
        bx.plot(ticks, [p[figure] for p in points], "-" + marker, label=f"samples: {figure}")
        for _, r, _, color in refs:
            bx.axhline(r[figure], color=color, lw=0.8, ls="--" if marker == "o" else ":")
    bx.set_xticks(ticks, [setting_label(p) for p in points], rotation=30, fontsize=8)
    bx.set_ylim(0, 1.05)
    bx.set_title("diversity (dashed / dotted: references)", fontsize=10)
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return as_path(path)


def write(report: dict[str, Any], out: str | Path) -> dict[str, Path | None]:
    """``OUT/report.json``, ``OUT/report.png`` and, for several points,
    ``OUT/guidance_sweep.png``. -> the paths written (None: no matplotlib)."""
    out = as_path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    paths = {"json": out / "report.json", "card": plot_report(report, out / "report.png")}
    if len(report["points"]) > 1:
        paths["sweep"] = plot_sweep(report, out / "guidance_sweep.png")
    return paths
