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
) -> dict[str, float | int | None]:
    """The distribution figures of one set against the real reference set, at one sample size.

    ``real_features`` [N, D] with ``real_labels`` [N]: the reference (e.g. the training split);
    ``fake_features`` [M, D] with ``fake_labels`` [M]: the set judged. The Fréchet distance,
    precision and recall are averaged over the class-stratified ``chunks`` of ``chunk_size``
    fakes (default: all M at once); the within-class variance ratio is over all M (it is
    unbiased at any size). -> flat dict: frechet, precision, recall, class_variance_ratio (mean
    over classes), class_variance_ratio_min, chunks (how many were averaged).
    """
    real, fake = _features(real_features), _features(fake_features)
    chex.assert_equal_shape_suffix([real, fake], 1)
    chex.assert_equal_shape_prefix([real, np.asarray(real_labels)], 1)
    chex.assert_equal_shape_prefix([fake, np.asarray(fake_labels)], 1)
    parts = chunks(fake_labels, chunk_size or len(fake))
    stats = fid.statistics(real)
    real_radii = knn_radii(real, k, batch_size)
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


def report(
    train_images,
    train_labels,
    test_images,
    test_labels,
    sample_images,
    sample_labels,
    reconstructions=None,
    *,
    features: Features = digits_features,
    classifier: Classifier | None = DigitsClassifier,
    spatial_features: Features | None = None,
    k: int = 3,
    batch_size: int | None = None,
) -> dict[str, float | int | None]:
    """Stage 2's report card: samples, held-out real images and (optionally) the autoencoder's
    reconstructions of them, each judged against the real training images.

    Images are uint8 [N, H, W, C], labels int [N]: the real training split (the reference), the
    real test split (real-vs-real, the reference), the samples with the
    labels they were asked for, and ``reconstructions`` of the test images in the same order
    (the ceiling stage 2 can reach through the decoder). ``features`` maps images to the fixed
    feature space; ``classifier(train_images, train_labels)`` returns an object whose
    ``accuracy(images, labels)`` is the recognised fraction (None: not reported).
    ``spatial_features`` (optional) maps images to a second feature space in which only the
    Fréchet distance is taken, at the same chunks: ``sfid`` and ``sfid_ratio``, the spatial FID
    of ADM's suite when it is Inception's ``mixed_6/conv`` (``convert.inception``). Pool
    features see what is in an image; these see where, so they catch spatial structure that
    pooling averages away (Nash et al. 2021).

    All sets are judged at one chunk size, min(len(samples), len(test)) (see the module
    docstring). Reading the ratio on the digits: their test split is every sixth digit of each
    class (``data/digits.py``) in a file whose order is not random (its two halves are 4x further
    apart in Fréchet distance on the pixels than random halves), so it is closer to the training
    split than a random draw: held-out parts of the training split chosen that way scored a
    Fréchet distance 1.3x lower than random class-stratified ones of the same size. Fresh digits
    from the real distribution would score a ratio of about 1.3, not 1.

    -> a flat, JSON-able dict: ``{set}_{figure}`` for set in real_test, samples,
    recon and figure in recognised, frechet, frechet_ratio (to real_test's), precision, recall,
    class_variance_ratio, class_variance_ratio_min, chunks (and sfid, sfid_ratio); plus the
    sizes, k and feature_dim (and spatial_feature_dim).
    """
    sets = {"real_test": (test_images, test_labels), "samples": (sample_images, sample_labels)}
    if reconstructions is not None:
        chex.assert_equal_shape([np.asarray(reconstructions), np.asarray(test_images)])
        sets["recon"] = (reconstructions, test_labels)
    for images, labels in [(train_images, train_labels), *sets.values()]:
        chex.assert_rank(images, 4)
        chex.assert_type(images, np.uint8)
        chex.assert_rank(labels, 1)
        chex.assert_equal_shape_prefix([images, labels], 1)

    real = features(train_images)
    size = min(len(test_images), len(sample_images))
    judge = classifier(train_images, train_labels) if classifier is not None else None
    out: dict[str, float | int | None] = {
        "num_real_train": len(train_images),
        "num_real_test": len(test_images),
        "num_samples": len(sample_images),
        "chunk_size": size,
        "k": k,
        "feature_dim": int(real.shape[1]),
    }
    spatial_stats = None
    if spatial_features is not None:
        real_spatial = _features(spatial_features(train_images))
        spatial_stats = fid.statistics(real_spatial)
        out["spatial_feature_dim"] = int(real_spatial.shape[1])
    reference = spatial_reference = None
    for name, (images, labels) in sets.items():
        figures = compare(
            real,
            train_labels,
            features(images),
            labels,
            chunk_size=size,
            k=k,
            batch_size=batch_size,
        )
        if reference is None:  # real_test comes first
            reference = figures["frechet"]
        figures["frechet_ratio"] = ratio(figures["frechet"], reference)
        if spatial_stats is not None:
            figures["sfid"] = chunked_frechet(spatial_stats, spatial_features(images), labels, size)
            if spatial_reference is None:
                spatial_reference = figures["sfid"]
            figures["sfid_ratio"] = ratio(figures["sfid"], spatial_reference)
        if judge is not None:
            figures["recognised"] = float(judge.accuracy(images, labels))
        out.update({f"{name}_{key}": value for key, value in figures.items()})
    return out
