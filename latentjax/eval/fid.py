"""Fréchet Inception Distance (Heusel et al. 2017, eq. 6 of "GANs trained by a two time-scale
update rule converge to a local Nash equilibrium"):

    FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

between Gaussians fitted to pool3 features of the FID InceptionV3 (models/inception.py;
weights: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``, read with weights_only=True).
Reference statistics are ``.npz`` files with ``mu`` and ``sigma`` (pytorch-fid's format).

Commands: ``latentjax fid-stats`` (reference statistics of a tfds dataset split) and
``latentjax fid`` (FID of sampled images, an ``.npz`` with ``images`` or a directory of such
shards, against a reference ``.npz``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from latentjax.errors import LatentjaxError
from latentjax.paths import Path, as_path


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Heusel et al.'s eq. 6 in float64. Tr((S1 S2)^(1/2)) is computed as the sum of square
    roots of the eigenvalues of S1^(1/2) S2 S1^(1/2), which is symmetric PSD and has the same
    spectrum as S1 S2: no complex square roots to discard."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise LatentjaxError(
            f"FID statistics do not match: mu {mu1.shape} vs {mu2.shape}, "
            f"sigma {s1.shape} vs {s2.shape}"
        )
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    eig = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_distance_to_features(features: np.ndarray, mu2, sigma2) -> float:
    """:func:`frechet_distance` between the Gaussian fitted to ``features`` [N, D] and
    (mu2, sigma2), cheaper when N < D: with X the centred features, S1 = X^T X / (N - 1), and
    S1 S2 = X^T (X S2) / (N - 1) has the same non-zero eigenvalues as X S2 X^T / (N - 1), an
    N x N symmetric PSD matrix."""
    mu1, s1 = statistics(features)
    if len(features) >= len(mu1):
        return frechet_distance(mu1, s1, mu2, sigma2)
    mu2, s2 = np.asarray(mu2, np.float64), np.asarray(sigma2, np.float64)
    if mu2.shape != mu1.shape or s2.shape != s1.shape:
        raise LatentjaxError(f"FID statistics do not match: mu {mu1.shape} vs {mu2.shape}")
    x = np.asarray(features, np.float64) - mu1
    eig = np.linalg.eigvalsh(x @ s2 @ x.T / (len(x) - 1))
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, D] features -> (mean [D], covariance [D, D] with the N - 1 normalisation)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise LatentjaxError(f"FID needs at least 2 feature vectors, got shape {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False)


def save_statistics(path: str | Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    path = as_path(path)
    if path.suffix != ".npz":  # as np.savez names a file it is given by name
        path = path.with_name(path.name + ".npz")
    with path.open("wb") as f:
        np.savez(f, mu=mu, sigma=sigma)


def load_statistics(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    path = as_path(path)
    if not path.is_file():
        raise LatentjaxError(f"no FID statistics at {path}")
    with path.open("rb") as file, np.load(file, allow_pickle=False) as f:
        if "mu" not in f.files or "sigma" not in f.files:
            raise LatentjaxError(f"{path} has no 'mu'/'sigma' arrays (keys: {f.files})")
        return np.asarray(f["mu"]), np.asarray(f["sigma"])


def to_unit_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 [B, H, W, C] (C = 1 or 3) -> float32 [B, H, W, 3] in [0, 1]."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise LatentjaxError(
            f"FID expects uint8 images [N, H, W, 1 or 3], got {images.dtype} {images.shape}"
        )
    x = images.astype(np.float32) / 255.0
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def features_of(batches: Iterable[np.ndarray], features) -> np.ndarray:
    return np.concatenate([np.asarray(features(to_unit_rgb(b)), np.float64) for b in batches])


def fid(images: Iterable[np.ndarray], ref: str | Path, features) -> float:
    """FID of uint8 image batches against reference statistics ``ref`` (.npz mu/sigma)."""
    return frechet_distance_to_features(features_of(images, features), *load_statistics(ref))


def read_images(path: str | Path, batch: int) -> Iterator[np.ndarray]:
    """Batches of ``images`` from an .npz (``latentjax sample --out``) or a directory of
    ``*.npz`` shards (``--shard-dir``), in file order."""
    path = as_path(path)
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise LatentjaxError(f"no image .npz at {path}")
    for f in files:
        try:
            with f.open("rb") as file, np.load(file, allow_pickle=False) as data:
                if "images" not in data.files:
                    raise LatentjaxError(f"{f} has no 'images' array")
                images = data["images"]
        except (ValueError, OSError, EOFError) as e:  # object arrays (pickles), damage
            raise LatentjaxError(f"{f} is not an .npz of image arrays ({e})") from e
        for i in range(0, len(images), batch):
            yield images[i : i + batch]


def dataset_images(name: str, split: str, data_dir: str, num: int | None, batch: int):
    from latentjax.data.pipeline import load_source

    source = load_source(name, split, data_dir)
    n = len(source) if num is None else min(num, len(source))
    for i in range(0, n, batch):
        yield np.stack([np.asarray(source[j]["image"]) for j in range(i, min(i + batch, n))])
