"""Generation judged as a distribution (DESIGN.md, principle 7): fidelity and coverage side by
side, each beside the same figure for held-out real data.

All functions are pure numpy in float64 and take features, ``[N, D]`` rows, computed by the
caller in a fixed feature space (``digits_features`` for the embedded digits; any
``images -> [N, D]`` function for another dataset), except ``report``, which takes images.

* Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, eq. 6;
  ``eval/fid.py``): low when the sets agree in mean and covariance.
* Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric
  for Assessing Generative Models", eqs. 1-3): precision, the share of samples that fall on the
  real data's manifold (fidelity); recall, the share of real data that falls on the samples'
  manifold (coverage). A manifold is the union of balls around a set's points, each ball's radius
  the distance to that point's k-th nearest other point in the set.
* Per-class diversity: the within-class variance of samples relative to that of real data of
  the same class; near 0 when a class has collapsed to a few images.

Sample size. The first two figures depend on how many samples they are computed from. The Fréchet
distance of two finite samples of one distribution is positive and falls roughly as 1/N (its
estimator is biased: Bińkowski et al. 2018, "Demystifying MMD GANs"; Chong & Forsyth 2020,
"Effectively Unbiased FID and Inception Score and where to find them"); precision and recall move
with the set sizes too (Kynkäänniemi et al. compare equal sizes). A figure is therefore only
comparable with its real-vs-real reference at the same N: ``compare`` splits the judged set into
class-stratified chunks of ``chunk_size`` and averages over them, and ``report`` uses one chunk
size for the samples, the held-out real images and the reconstructions. On the digits' features,
the Fréchet distance of 50 / 296 / 700 real digits to 800 others measured 39 / 7.4 / 4.5:
unmatched, 1,000 perfect samples would score well under their reference of 296 test digits.

How the reference is drawn matters as much. Samples are independent draws; a held-out split may
not be: the digits' test split is every sixth digit of each class in a file ordered by writer,
so it holds every writer in proportion, and its Fréchet distance to the training split (2.5 in
the digits' space) is lower than that of any random chunk of the same size (4.0 ± 0.7 over 20
chunks held out of the training split and judged against the rest). Against the test split,
perfect samples would read about 1.6x. ``report`` therefore takes random chunks of the training
split as the reference (``heldout_chunks``) and reports the test split beside it.
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import numpy as np

from latentjax.errors import LatentjaxError
from latentjax.eval import fid
from latentjax.eval.digits_classifier import DigitsClassifier
from latentjax.eval.digits_features import digits_features

BLOCK_ELEMENTS = 2**24  # distances held at once in precision/recall: 128 MiB of float64
# ``report``'s real-vs-real reference: this many chunks of the training split held out in turn.
# On the digits one chunk's distance varies by 18% (sd) from draw to draw; 20 bring the
# reference's own error to about 4%.
HELDOUT_SPLITS = 20
HELDOUT_SEED = 0
# What ``report``'s ratios are multiples of, named in reports and probe protocols: before
# 2026-12-03 the test split (``real_test``) was the reference.
REFERENCE = "train-heldout"


def _features(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    chex.assert_rank(x, 2)
    return x


def frechet_distance(real_features, fake_features) -> float:
    """Heusel et al.'s eq. 6 between Gaussians fitted to ``real_features`` [N, D] and
    ``fake_features`` [M, D], by ``fid.frechet_distance_to_features`` (which takes the M x M
    route when M < D)."""
    real, fake = _features(real_features), _features(fake_features)
    chex.assert_equal_shape_suffix([real, fake], 1)
    return fid.frechet_distance_to_features(fake, *fid.statistics(real))


def ratio(value: float, reference: float) -> float:
    """``value / reference``: a figure relative to its real-vs-real reference (1 = as close as
    held-out real data). 1 when both are 0, inf when only the reference is."""
    if reference == 0:
        return 1.0 if value == 0 else float("inf")
    return float(value / reference)


def chunks(labels, size: int) -> list[np.ndarray]:
    """Indices of ``len(labels) // size`` disjoint chunks of exactly ``size`` points each, every
    chunk with each class in (nearly) its overall proportion; leftover points are not used.

    Deterministic, no randomness: points are ordered by the fraction of their class already seen
    (the j-th of n points of a class at (j + 1/2) / n), which interleaves the classes evenly, and
    the chunks are consecutive runs of that order. Within a class, points keep their given order.
    ``labels``: [N] (any values; pass zeros for unlabelled data). -> list of int arrays [size].
    """
    labels = np.asarray(labels)
    chex.assert_rank(labels, 1)
    if size < 1 or size > len(labels):
        raise LatentjaxError(f"cannot take chunks of {size} from {len(labels)} points")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    rank = np.empty(len(labels), np.int64)  # position of each point within its class
    for c in range(len(counts)):
        rank[inverse == c] = np.arange(counts[c])
    order = np.lexsort((inverse, (rank + 0.5) / counts[inverse]))
    return [order[i * size : (i + 1) * size] for i in range(len(labels) // size)]


def _block_rows(n_columns: int, batch_size: int | None) -> int:
    return batch_size or max(1, BLOCK_ELEMENTS // max(n_columns, 1))


def _squared_distances(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2 [A, B] as ||a||^2 + ||b||^2 - 2 a.b (one matrix product), clipped at 0
    (rounding can take it just below)."""
    d = np.einsum("ij,ij->i", a, a)[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0, out=d)


def knn_radii(features, k: int = 3, batch_size: int | None = None) -> np.ndarray:
    """Distance from each point to its k-th nearest *other* point of the same set: the radius of
    its ball in Kynkäänniemi et al.'s manifold estimate (eq. 1, ||phi' - NN_k(phi')||_2). A point
    is never its own neighbour (its own entry is excluded by index, so an exact duplicate elsewhere
    still counts, at distance 0).

    ``features`` [N, D] -> radii [N]. Exact distances, ``batch_size`` rows at a time against all
    N (by default as many rows as keep a block within ``BLOCK_ELEMENTS`` distances).
    """
    x = _features(features)
    n = len(x)
    if not 1 <= k < n:
        raise LatentjaxError(f"k-NN radii need 1 <= k < N, got k={k} with N={n}")
    x = x - x.mean(axis=0)  # distances are unchanged; rounding in ||a||^2 + ||b||^2 - 2ab shrinks
    sq = np.einsum("ij,ij->i", x, x)
    rows = _block_rows(n, batch_size)
    radii_sq = np.empty(n)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        d = _squared_distances(x[start:stop], x, sq)  # [rows, N]
        d[np.arange(stop - start), np.arange(start, stop)] = np.inf  # not its own neighbour
        radii_sq[start:stop] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return np.sqrt(radii_sq)


def _inside(points: np.ndarray, manifold: np.ndarray, radii: np.ndarray, batch_size) -> np.ndarray:
    """Kynkäänniemi et al.'s eq. 1: whether each of ``points`` [P, D] lies in at least one ball
    (centre ``manifold`` [M, D], radius ``radii`` [M], boundary included). -> bool [P]"""
    centre = manifold.mean(axis=0)
    points, manifold = points - centre, manifold - centre
    sq, radii_sq = np.einsum("ij,ij->i", manifold, manifold), radii**2
    rows = _block_rows(len(manifold), batch_size)
    out = np.empty(len(points), bool)
    for start in range(0, len(points), rows):
        d = _squared_distances(points[start : start + rows], manifold, sq)  # [rows, M]
        out[start : start + rows] = (d <= radii_sq[None, :]).any(axis=1)
    return out


def precision_recall(
    real_features, fake_features, k: int = 3, batch_size: int | None = None
) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eqs. 1-3).

    ``real_features`` [N, D], ``fake_features`` [M, D] -> {precision, recall}:
    precision = (1/M) sum over fakes of f(fake, reals) (eq. 2), recall = (1/N) sum over reals of
    f(real, fakes) (eq. 3), where f(x, S) = 1 when x lies within ``knn_radii(S, k)`` of some
    point of S (eq. 1). Both sets need more than k points. Both figures depend on the set sizes
    (the paper uses equal sizes); ``compare`` matches them to a reference.
    """
    real, fake = _features(real_features), _features(fake_features)
    chex.assert_equal_shape_suffix([real, fake], 1)
    real_radii = knn_radii(real, k, batch_size)
    fake_radii = knn_radii(fake, k, batch_size)
    return {
        "precision": float(_inside(fake, real, real_radii, batch_size).mean()),
        "recall": float(_inside(real, fake, fake_radii, batch_size).mean()),
    }


def class_variance(features, labels) -> dict[int, float]:
    """Within-class variance of each class with at least 2 points: the mean squared distance of
    its points to their class mean, with Bessel's n - 1 (the trace of the unbiased class
    covariance), so that classes of 10 and of 150 points are on one footing.

    ``features`` [N, D], ``labels`` [N] -> {class: variance}.
    """
    x, labels = _features(features), np.asarray(labels)
    chex.assert_rank(labels, 1)
    chex.assert_equal_shape_prefix([x, labels], 1)
    out = {}
    for c in np.unique(labels):
        xc = x[labels == c]
        if len(xc) >= 2:
            out[int(c)] = float(np.square(xc - xc.mean(axis=0)).sum() / (len(xc) - 1))
    return out


def class_variance_ratio(real_features, real_labels, fake_features, fake_labels) -> dict:
    """Per-class diversity of the fakes relative to the real data: for each class present (with
    2+ points) in both, fake ``class_variance`` / real ``class_variance``. 1: as diverse as the
    real class; 0: the class collapsed to one point. -> {per_class: {class: ratio}, mean, min}
    (mean and min over those classes; None when there is none)."""
    real, fake = (
        class_variance(real_features, real_labels),
        class_variance(fake_features, fake_labels),
    )
    per_class = {c: fake[c] / real[c] for c in sorted(fake) if real.get(c, 0) > 0}
    values = list(per_class.values())
    return {
        "per_class": per_class,
        "mean": float(np.mean(values)) if values else None,
        "min": float(np.min(values)) if values else None,
    }


def chunked_frechet(stats, features, labels, size: int) -> float:
    """The Fréchet distance of ``features`` [N, D] to the Gaussian ``stats`` (mean, covariance:
    ``fid.statistics`` of the real set), averaged over the class-stratified ``chunks`` of
    ``size`` points (``labels`` [N]; None: one class)."""
    x = _features(features)
    labels = np.zeros(len(x)) if labels is None else labels
    return float(
        np.mean([fid.frechet_distance_to_features(x[i], *stats) for i in chunks(labels, size)])
    )


def frechet_ratio(
    real_features, heldout_features, fake_features, heldout_labels=None, fake_labels=None
) -> dict[str, float]:
    """The Fréchet distance of fakes to real data relative to that of held-out real data, at one
    sample size: ``frechet_distance(real, x)`` averaged over ``chunks`` of x, for x the held-out
    set and the fakes, with chunks of min(len(heldout), len(fakes)) points (class-stratified when
    labels are given). ``real_features`` [N, D] and ``heldout_features`` [H, D] should be disjoint
    real data (e.g. the train and test splits). -> {frechet, reference, ratio, chunk_size}."""
    real, heldout, fake = (_features(a) for a in (real_features, heldout_features, fake_features))
    chex.assert_equal_shape_suffix([real, heldout, fake], 1)
    size = min(len(heldout), len(fake))
    stats = fid.statistics(real)
    value = chunked_frechet(stats, fake, fake_labels, size)
    reference = chunked_frechet(stats, heldout, heldout_labels, size)
    return {
        "frechet": value,
        "reference": reference,
        "ratio": ratio(value, reference),
        "chunk_size": size,
    }


def compare(
    real_features,
    real_labels,
    fake_features,
    fake_labels,
    *,
    chunk_size: int | None = None,
    k: int = 3,
    batch_size: int | None = None,
    reference: tuple | None = None,
) -> dict[str, float | int | None]:
    """The distribution figures of one set against the real reference set, at one sample size.

    ``real_features`` [N, D] with ``real_labels`` [N]: the reference (e.g. the training split);
    ``fake_features`` [M, D] with ``fake_labels`` [M]: the set judged. The Fréchet distance,
    precision and recall are averaged over the class-stratified ``chunks`` of ``chunk_size``
    fakes (default: all M at once); the within-class variance ratio is over all M (it is
    unbiased at any size). -> flat dict: frechet, precision, recall, class_variance_ratio (mean
    over classes), class_variance_ratio_min, chunks (how many were averaged). ``reference``:
    the real set's (``fid.statistics``, ``knn_radii``) when already computed (``report`` judges
    several sets against one).
    """
    real, fake = _features(real_features), _features(fake_features)
    chex.assert_equal_shape_suffix([real, fake], 1)
    chex.assert_equal_shape_prefix([real, np.asarray(real_labels)], 1)
    chex.assert_equal_shape_prefix([fake, np.asarray(fake_labels)], 1)
    parts = chunks(fake_labels, chunk_size or len(fake))
    stats, real_radii = reference or (fid.statistics(real), knn_radii(real, k, batch_size))
    frechet, precision, recall = [], [], []
    for idx in parts:
        x = fake[idx]
        frechet.append(fid.frechet_distance_to_features(x, *stats))
        precision.append(_inside(x, real, real_radii, batch_size).mean())
        recall.append(_inside(real, x, knn_radii(x, k, batch_size), batch_size).mean())
    diversity = class_variance_ratio(real, real_labels, fake, fake_labels)
    return {
        "frechet": float(np.mean(frechet)),
        "precision": float(np.mean(precision)),
        "recall": float(np.mean(recall)),
        "class_variance_ratio": diversity["mean"],
        "class_variance_ratio_min": diversity["min"],
        "chunks": len(parts),
    }


Features = Callable[[np.ndarray], np.ndarray]  # uint8 images [N, H, W, C] -> [N, D]
Classifier = Callable[[np.ndarray, np.ndarray], object]  # (images, labels) -> .accuracy(x, y)


def heldout_chunks(labels, size: int, splits: int = HELDOUT_SPLITS) -> list[np.ndarray]:
    """Indices of ``splits`` random chunks of ``size`` points of a labelled set, each
    class-stratified as ``chunks`` makes them and drawn independently of the others, to be held
    out of the set one at a time: the real-vs-real reference of ``report``. Seeded
    (``HELDOUT_SEED``), so a set always yields the same chunks. Needs at least ``2 * size``
    points (the rest must be as large as a chunk). ``labels``: [N] -> sorted int arrays [size]."""
    labels = np.asarray(labels)
    chex.assert_rank(labels, 1)
    if splits < 1 or len(labels) < 2 * size:
        raise LatentjaxError(
            f"a real-vs-real reference holds out chunks of {size} real images from the training "
            f"split and compares them with the rest: it needs at least {2 * size} training "
            f"images, got {len(labels)}"
        )
    rng = np.random.default_rng(HELDOUT_SEED)
    out = []
    for _ in range(splits):
        order = rng.permutation(len(labels))
        out.append(np.sort(order[chunks(labels[order], size)[0]]))
    return out


def _mean_figures(rows: list[dict]) -> dict:
    """One set's figures over the held-out chunks: each the mean of its values (None where any
    is None, e.g. a class-variance ratio with no class in common); ``chunks`` as it is."""
    out = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if key == "chunks":
            out[key] = int(values[0])
        else:
            out[key] = None if any(v is None for v in values) else float(np.mean(values))
    return out


def report(
    train_images,
    train_labels,
    test_images,
    test_labels,
    sample_images,
    sample_labels,
    *,
    train_reconstructions=None,
    features: Features = digits_features,
    classifier: Classifier | None = DigitsClassifier,
    spatial_features: Features | None = None,
    k: int = 3,
    batch_size: int | None = None,
    splits: int = HELDOUT_SPLITS,
) -> dict[str, float | int | None]:
    """Stage 2's report card: samples beside real images and the autoencoder's reconstructions,
    each judged against real training images.

    Images are uint8 [N, H, W, C], labels int [N]: the real training split, the real test split,
    the samples with the labels they were asked for and, optionally, the autoencoder's
    ``train_reconstructions`` of the training images (in their order). ``features`` maps images
    to the fixed feature space; ``classifier(images, labels)`` returns an object whose
    ``accuracy(images, labels)`` is the recognised fraction (None: not reported).
    ``spatial_features`` (optional) maps images to a second feature space in which only the
    Fréchet distance is taken, at the same chunks: ``sfid`` and ``sfid_ratio``, the spatial FID
    of ADM's suite when it is Inception's ``mixed_6/conv`` (``convert.inception``). Pool
    features see what is in an image; these see where, so they catch spatial structure that
    pooling averages away (Nash et al. 2021).

    The reference (real-vs-real) is drawn as samples are: a generator's samples are independent
    draws from the distribution of its training images, so the reference is ``heldout_chunks``,
    random class-stratified chunks of the training split, each judged against the rest of the
    split. Every set is judged against the same rests (every figure is its mean over the
    ``splits`` chunks, the classifier fitted on each rest), so ``real_heldout``'s Fréchet ratio
    is 1 and the others are multiples of it; ``recon`` are the reconstructions of the held-out
    chunks: what a stage 2 that drew its latents exactly from the training latents would score
    (its ceiling). A held-out split need not be such a draw, and the digits' is not: their test
    split is every sixth digit of each class (``data/digits.py``) of a file ordered by writer,
    a sample stratified by writer, and it reads about 0.6x of random held-out digits
    (README, "Stage 2's report card"). It is judged as one more set, ``real_test``: how real
    images the models never saw read.

    All sets are judged at one chunk size, min(len(samples), len(test)) (see the module
    docstring).

    -> a flat, JSON-able dict: ``{set}_{figure}`` for set in real_heldout, real_test, samples,
    recon and figure in recognised, frechet, frechet_ratio (to real_heldout's), precision,
    recall, class_variance_ratio, class_variance_ratio_min, chunks (and sfid, sfid_ratio), and
    ``real_heldout_frechet_sd`` (the spread of the reference over its chunks); plus the sizes,
    the number of held-out chunks, k and feature_dim (and spatial_feature_dim).
    """
    for images, labels in (
        (train_images, train_labels),
        (test_images, test_labels),
        (sample_images, sample_labels),
    ):
        chex.assert_rank(images, 4)
        chex.assert_type(images, np.uint8)
        chex.assert_rank(labels, 1)
        chex.assert_equal_shape_prefix([images, labels], 1)
    if train_reconstructions is not None:
        chex.assert_equal_shape([np.asarray(train_reconstructions), np.asarray(train_images)])
        chex.assert_type(train_reconstructions, np.uint8)

    size = min(len(test_images), len(sample_images))
    held = heldout_chunks(train_labels, size, splits)
    real = _features(features(train_images))
    spatial = _features(spatial_features(train_images)) if spatial_features else None
    train_labels = np.asarray(train_labels)
    out: dict[str, float | int | None] = {
        "num_real_train": len(train_images),
        "num_real_test": len(test_images),
        "num_samples": len(sample_images),
        "chunk_size": size,
        "heldout_chunks": len(held),
        "k": k,
        "feature_dim": int(real.shape[1]),
    }
    if spatial is not None:
        out["spatial_feature_dim"] = int(spatial.shape[1])

    def features_of(images) -> tuple[np.ndarray, np.ndarray | None]:
        pooled = _features(features(images))
        return pooled, _features(spatial_features(images)) if spatial is not None else None

    fixed = {
        "real_test": (test_images, np.asarray(test_labels)),
        "samples": (sample_images, np.asarray(sample_labels)),
    }
    fixed_features = {name: features_of(x) for name, (x, _) in fixed.items()}
    per_split: dict[str, list[dict]] = {}
    for h in held:
        rest = np.setdiff1d(np.arange(len(real)), h)
        reference = (fid.statistics(real[rest]), knn_radii(real[rest], k, batch_size))
        spatial_stats = fid.statistics(spatial[rest]) if spatial is not None else None
        judge = classifier(train_images[rest], train_labels[rest]) if classifier else None
        held_spatial = spatial[h] if spatial is not None else None
        sets = {"real_heldout": (train_images[h], train_labels[h], (real[h], held_spatial))}
        if train_reconstructions is not None:
            recon = np.asarray(train_reconstructions)[h]
            sets["recon"] = (recon, train_labels[h], features_of(recon))
        for name, (x, labels) in fixed.items():
            sets[name] = (x, labels, fixed_features[name])
        for name, (x, labels, (f, fs)) in sets.items():
            figures = compare(
                real[rest],
                train_labels[rest],
                f,
                labels,
                chunk_size=size,
                k=k,
                batch_size=batch_size,
                reference=reference,
            )
            if spatial_stats is not None:
                figures["sfid"] = chunked_frechet(spatial_stats, fs, labels, size)
            if judge is not None:
                figures["recognised"] = float(judge.accuracy(x, labels))
            per_split.setdefault(name, []).append(figures)
    base = per_split["real_heldout"]
    reference_fd = float(np.mean([f["frechet"] for f in base]))
    reference_sfid = float(np.mean([f["sfid"] for f in base])) if spatial is not None else None
    for name in ("real_heldout", "real_test", "recon", "samples"):
        if name not in per_split:
            continue
        figures = _mean_figures(per_split[name])
        figures["frechet_ratio"] = ratio(figures["frechet"], reference_fd)
        if reference_sfid is not None:
            figures["sfid_ratio"] = ratio(figures["sfid"], reference_sfid)
        out.update({f"{name}_{key}": value for key, value in figures.items()})
    spread = np.std([f["frechet"] for f in base], ddof=1) if len(base) > 1 else 0.0
    out["real_heldout_frechet_sd"] = float(spread)
    return out
