"""Latent caching: a dataset encoded once by a frozen stage-1 encoder, for stage 2 to read.

``latentjax encode --workdir AE_RUN --out CACHE_DIR`` (``latentjax/train/latent_cache.py``) runs
the encoder over a dataset (the run's own by default), its batches split over every device of the
run's mesh (:func:`encoded_batches`), and writes (:func:`write_cache`) an array_record tfds
dataset ``latentjax_latents`` (or ``--name``) into the data_dir ``CACHE_DIR``:

    {"mean": f32 [h, w, c], "std": f32 [h, w, c], "label": int64}

the posterior's mean and standard deviation (std is 0 for deterministic bottlenecks), so stage
2 still trains on samples ``z = mean + std * eps`` drawn afresh each step, exactly as when it
encodes on the fly, at a fraction of the cost (LDM/DiT-style pipelines cache latents the same
way). Images are centre-cropped when the run crops and resized to the run's ``image_size``.
With ``--flip`` a second split, ``<split>_flip``, holds the latents of the mirrored images: the
encoder is not equivariant to flips, so flip augmentation of stage 2 needs them encoded too.
A video autoencoder's run caches the latents of clips, ``[t, h, w, c]`` each, and records the
clip length (``frames``) in the cache's info.

Several processes each encode their own shard; the latents are gathered and process 0 writes.

**In a bucket** (``--out gs://…``): ArrayRecord files are read and written as local files (its
reader does not speak ``gs://``), so process 0 builds the cache in a local temporary folder and
uploads it, :data:`CACHE_INFO` last: the info file is the commit marker, and a folder without it
(an upload cut short) is not a cache. Stage 2 reading ``data.latent_cache=gs://…`` copies the
cache to this host's disk once (:func:`local_copy`, under ``$LATENTJAX_MIRROR_DIR`` or
``~/.cache/latentjax/mirrors``) and reads the copy; every host of a pod makes its own. A cache
too big for a host's disk is read through a gcsfuse mount instead (README, "Running on a pod").
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from latentjax import paths
from latentjax.data import local, pipeline
from latentjax.data.local import LocalBuild
from latentjax.data.normalization import latent_moments
from latentjax.data.pipeline import DataError
from latentjax.parallel import mesh as mesh_lib
from latentjax.paths import Path, as_path

DEFAULT_NAME = "latentjax_latents"
CACHE_INFO = "latentjax_cache.json"
FLIP_SUFFIX = "_flip"
MIRROR_ENV = "LATENTJAX_MIRROR_DIR"
_CHUNK = 16 << 20  # bytes per read when copying to or from a bucket


def encoded_batches(
    encode, source, *, batch_size: int, image_size: int, crop: str, flip: bool, mesh
) -> Iterator[dict[str, np.ndarray]]:
    """Host batches ``{"mean", "std", "label"}`` of the whole ``source`` (every process's shard,
    gathered), encoded by ``encode(images) -> (mean, std)``; the last batch is padded to the
    global batch for the devices and the padding dropped."""
    n = jax.process_count()
    dp = mesh_lib.data_parallel_size(mesh)
    if batch_size <= 0 or batch_size % dp or batch_size % n:
        raise DataError(
            f"--batch-size {batch_size} must be a positive multiple of the {dp} data-parallel "
            f"devices and {n} processes"
        )
    if len(source) < n:
        raise DataError(f"the dataset has {len(source)} examples, fewer than {n} processes")
    local = batch_size // n
    ds = pipeline.make_dataset(
        source,
        global_batch_size=batch_size,
        image_size=image_size,
        crop="center" if crop != "none" else "none",
        shuffle=False,
        repeat=False,
        drop_remainder=False,
    )
    for batch in ds:
        count = len(batch["label"])
        images = batch["video" if "video" in batch else "image"]  # clips [B, T, H, W, C]
        if flip:  # mirror the width axis (the second-last)
            images = images[..., ::-1, :]
        if count < local:  # pad: every process runs the same program on full batches
            pad = np.zeros((local - count, *images.shape[1:]), images.dtype)
            images = np.concatenate([images, pad])
        valid = np.zeros(local, bool)
        valid[:count] = True
        mean, std = encode(mesh_lib.global_batch({"image": images}, mesh)["image"])
        gathered = multihost_utils.process_allgather(
            {"mean": mean, "std": std}, tiled=True
        )  # [batch_size, ...] in process order
        keep = np.asarray(multihost_utils.process_allgather(valid, tiled=False)).reshape(-1)
        labels = np.asarray(
            multihost_utils.process_allgather(
                np.concatenate([batch["label"], np.zeros(local - count, np.int32)]), tiled=False
            )
        ).reshape(-1)
        yield {
            "mean": np.asarray(gathered["mean"])[keep],
            "std": np.asarray(gathered["std"])[keep],
            "label": labels[keep].astype(np.int64),
        }


class LatentCacheBuilder(LocalBuild, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Latents written by :func:`write_cache` (the dataset's name is given there)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Latents of a frozen stage-1 encoder."}

    def __init__(self, *, latent_shape=(1, 1, 1), splits=None, **kwargs):
        self._latent_shape, self._splits = tuple(latent_shape), splits or {}
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        shape = self._latent_shape
        return local.dataset_info(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "mean": tfds.features.Tensor(shape=shape, dtype=np.float32),
                    "std": tfds.features.Tensor(shape=shape, dtype=np.float32),
                    "label": tfds.features.Tensor(shape=(), dtype=np.int64),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {name: self._generate_examples(batches) for name, batches in self._splits.items()}

    def _generate_examples(self, batches):
        i = 0
        for batch in batches():
            for mean, std, label in zip(batch["mean"], batch["std"], batch["label"], strict=True):
                yield i, {"mean": mean, "std": std, "label": int(label)}
                i += 1


def check_out(out: str, name: str) -> None:
    """Refuses to write cache ``name`` into ``out`` where one is already there (checked before
    anything is encoded). A bucket folder without the info file is an upload cut short: it is
    written over."""
    if any((as_path(out) / name).glob(f"*/{CACHE_INFO}")):
        raise DataError(f"a latent cache {name!r} already exists in {as_path(out) / name}")


def write_cache(
    out: str, name: str, latent_shape: tuple[int, ...], splits: dict[str, Any], info: dict
) -> None:
    """Writes ``splits`` (name -> zero-argument function returning an iterator of batches) as
    dataset ``name`` in data_dir ``out`` (a local folder or a bucket). Every process must call
    it (the batches come from collective programs); only process 0 writes files."""
    check_out(out, name)
    if jax.process_index() != 0:
        for batches in splits.values():
            for _ in batches():
                pass
        return
    if paths.is_local(out):
        _build(out, name, latent_shape, splits, info)
        return
    with tempfile.TemporaryDirectory(prefix="latentjax-encode-") as local:
        _build(local, name, latent_shape, splits, info)
        _upload(as_path(local) / name, as_path(out) / name)


def _build(out: str, name: str, latent_shape, splits, info) -> None:
    cls = type(
        name, (LatentCacheBuilder,), {"name": name, "__module__": __name__}, skip_registration=True
    )
    builder = cls(
        latent_shape=latent_shape, splits=splits, data_dir=out, file_format="array_record"
    )
    if builder.is_prepared():
        raise DataError(f"a latent cache {name!r} already exists in {builder.data_dir}")
    builder.download_and_prepare()
    (as_path(builder.data_dir) / CACHE_INFO).write_text(json.dumps(info, indent=2))


def _copy(src: Path, dst: Path) -> None:
    """One file from ``src`` to ``dst`` in chunks (either may be in a bucket); a local ``dst``
    is written beside and renamed, so a reader never sees half of it."""
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.tmp" if paths.is_local(dst) else dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as r, tmp.open("wb") as w:
        shutil.copyfileobj(r, w, _CHUNK)
    if tmp != dst:
        os.replace(tmp, dst)


def _cache_files(folder: Path) -> list[Path]:
    """The files of the dataset folder ``folder``, its :data:`CACHE_INFO` files last (they mark
    a version complete)."""
    return sorted(paths.files_under(folder), key=lambda p: (p.name == CACHE_INFO, str(p)))


def _upload(local: Path, remote: Path) -> None:
    for f in _cache_files(local):
        _copy(f, remote / f.relative_to(local))


# --- reading the cache (stage 2) ------------------------------------------------------------


def _mirror_root() -> Path:
    default = os.path.expanduser("~/.cache/latentjax/mirrors")
    return as_path(os.environ.get(MIRROR_ENV) or default)


def _no_cache(latent_cache: str) -> DataError:
    return DataError(
        f"data.latent_cache={latent_cache!r}: no latent cache there; write one with "
        "`latentjax encode --workdir AE_RUN --out DIR`"
    )


def local_copy(latent_cache: str) -> str:
    """``latent_cache`` itself where it is local; a bucket's cache copied to this host's disk
    (``$LATENTJAX_MIRROR_DIR/<scheme>/<bucket>/<path>``) and that copy's dataset folder.

    A copy already there is kept where its info file equals the bucket's and every file has the
    bucket's size (a cache is written once); a different cache at the same URL replaces it.
    Files are copied whole and renamed, info files last, so a copy cut short is completed by
    the next call. Processes sharing a disk take turns: each holds an exclusive lock on the copy
    (:func:`mirror_lock`) while it checks and copies, so none removes a copy another is writing,
    and the next finds the first's copy complete."""
    if paths.is_local(latent_cache):
        return latent_cache
    path = as_path(latent_cache)
    for remote in (path / DEFAULT_NAME, path):
        infos = sorted(remote.glob(f"*/{CACHE_INFO}"))
        if infos:
            break
    else:
        raise _no_cache(latent_cache)
    scheme, rest = str(remote).split("://", 1)
    local = _mirror_root() / scheme / rest
    local.parent.mkdir(parents=True, exist_ok=True)
    with open(mirror_lock(local), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        stale = [
            f
            for f in infos
            if not (local / f.relative_to(remote)).exists()
            or (local / f.relative_to(remote)).read_text() != f.read_text()
        ]
        if stale and local.exists():
            shutil.rmtree(local, ignore_errors=True)  # absent, cut short or another cache's
        for f in _cache_files(remote):
            dst = local / f.relative_to(remote)
            if f.name == CACHE_INFO or not dst.exists() or dst.stat().length != f.stat().length:
                _copy(f, dst)
    return str(local)


def mirror_lock(local: Path) -> str:
    """The lock file beside a host's copy of a bucket cache (``local``), which
    :func:`local_copy` holds while it checks and copies."""
    return str(local.parent / f".{local.name}.lock")


def cache_location(latent_cache: str) -> tuple[str, str]:
    """``data.latent_cache`` -> (data_dir, name): either a data_dir holding the default dataset
    name or ``DATA_DIR/NAME``; a bucket's cache is read from this host's copy
    (:func:`local_copy`)."""
    path = as_path(local_copy(latent_cache))
    if (path / DEFAULT_NAME).is_dir():
        return str(path), DEFAULT_NAME
    if path.is_dir() and any(p.is_dir() for p in path.iterdir()):
        return str(path.parent), path.name
    raise _no_cache(latent_cache)


def read_cache_info(latent_cache: str) -> dict[str, Any]:
    data_dir, name = cache_location(latent_cache)
    versions = sorted((as_path(data_dir) / name).glob(f"*/{CACHE_INFO}"))
    if not versions:
        raise DataError(f"{(as_path(data_dir) / name)} is not a latent cache (no {CACHE_INFO})")
    return json.loads(versions[-1].read_text())


def load_cache(latent_cache: str, split: str, flip: bool) -> Any:
    """The cached split as a Grain source; with ``flip``, the split and its mirrored copy."""
    data_dir, name = cache_location(latent_cache)
    source = pipeline.load_source(name, split, data_dir)
    if not flip:
        return source
    if not read_cache_info(latent_cache)["flip"]:
        raise DataError(
            f"data.flip is on but the latent cache {latent_cache} has no flipped copy; "
            "encode with --flip"
        )
    mirrored = pipeline.load_source(name, split + FLIP_SUFFIX, data_dir)
    return grain.MapDataset.concatenate(
        [grain.MapDataset.source(source), grain.MapDataset.source(mirrored)]
    )


@dataclasses.dataclass(frozen=True)
class LatentRecord(grain.transforms.Map):
    """A cache record -> float32 mean/std and an int32 label."""

    def map(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
        return {
            "mean": np.asarray(example["mean"], np.float32),
            "std": np.asarray(example["std"], np.float32),
            "label": np.asarray(example["label"], np.int32),
        }


def latent_stats(moments: Iterable[tuple[Any, Any, Any]]) -> dict[str, Any]:
    """The latent normalisation from per-batch moments ``(E[z], E[z^2], Var[posterior mean])``,
    each per channel [C], of posterior samples z: the shift and scale ``(z - shift) * scale``
    that give the latents zero mean and unit variance over all elements (Stable Diffusion's
    ``scaling_factor`` is 1 / std of its latents; Rombach et al. 2022, sec. 4.3.2), and the
    per-channel figures. Batches are weighted equally (they are of one size); the sums are
    taken in the moments' own dtype."""
    sums, count = None, 0
    for m in moments:
        m = tuple(np.asarray(v) for v in m)
        sums = m if sums is None else tuple(a + b for a, b in zip(sums, m, strict=True))
        count += 1
    if sums is None:
        raise DataError("no batches to measure latent statistics on")
    mean_c, sq_c, var_of_mean_c = (s / count for s in sums)
    mean = float(mean_c.mean())
    std = float(np.sqrt(sq_c.mean() - mean**2))
    return {
        "shift": mean,
        "scale": 1.0 / std,
        "std": std,
        "channel_mean": mean_c.tolist(),
        "channel_std": np.sqrt(np.maximum(sq_c - mean_c**2, 0.0)).tolist(),
        "channel_var_of_posterior_mean": var_of_mean_c.tolist(),
        "num_batches": count,
    }


def cached_moments(batches, seed: int = 0) -> Iterator[tuple[np.ndarray, ...]]:
    """:func:`latent_stats`' moments of latent-cache batches, on samples ``mean + std * eps``
    like the ones the trainer draws."""
    rng = np.random.default_rng(seed)
    for batch in batches:
        mean, std = np.asarray(batch["mean"]), np.asarray(batch["std"])
        z = mean + std * rng.standard_normal(mean.shape, np.float32)
        yield tuple(np.float64(m) for m in latent_moments(z, mean))
