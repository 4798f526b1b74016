"""Grain input pipelines over tensorflow-datasets sources.

``tfds.data_source`` gives random access to an array_record dataset; Grain turns it into a
deterministic stream:

    source -> shard by process -> seeded shuffle (a new order every epoch) -> repeat
           -> decode/resize/normalise -> batch of global_batch_size / process_count

Each process reads only its own shard and yields its part of the global batch; the trainer
assembles the global array (``jax.make_array_from_process_local_data``). The iterator's position
is a small state (``it.get_state()``) that Orbax saves with every checkpoint through
``grain.checkpoint.CheckpointHandler``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from latentjax.data import digits
from latentjax.errors import ConfigError


class DataError(ConfigError, ValueError):
    """A dataset that is unknown or not prepared, or a batch that does not fit it.

    A ``ConfigError`` so the CLI prints it as one line, and a ``ValueError`` for library callers.
    """


def load_source(name: str, split: str, data_dir: str) -> Sequence[dict[str, Any]]:
    """Random-access source (``len`` and ``[i]``) of a prepared tfds dataset.

    The embedded digits (``digits.NAME``) are built on first use; every other dataset must have
    been prepared in ``data_dir`` in array_record format beforehand (nothing is downloaded).
    """
    if name == digits.NAME:
        digits.prepare_digits(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        # tfds' own message lists all ~1,000 registered datasets: keep ours to one line.
        raise DataError(
            f"unknown dataset {name!r}: no tfds builder of that name and none prepared in "
            f"data_dir {data_dir!r}"
        ) from e
    if not builder.is_prepared():
        raise DataError(
            f"dataset {name!r} is not prepared in data_dir {data_dir!r} (looked in "
            f"{builder.data_dir}); prepare it there with file_format='array_record'"
        )
    try:
        # download=False: otherwise tfds tries to build a missing dataset in its default
        # (tfrecord) format, which needs TensorFlow.
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except (ValueError, NotImplementedError) as e:  # unknown split, or a tfrecord-only dataset
        first_line = str(e).strip().splitlines()[0][:200]
        raise DataError(
            f"dataset {name!r} split {split!r} in data_dir {data_dir!r}: {first_line}"
        ) from e


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """float32 [H, W, C] -> float32 [size, size, C] with Pillow's bilinear filter.

    Pillow widens the triangle filter by the scale factor when shrinking, so downsampling is
    antialiased; the weights are non-negative, so values stay within the input's range. Done per
    channel in Pillow's 32-bit float mode: any channel count, no rounding to uint8 in between.
    """
    channels = [
        np.asarray(Image.fromarray(image[..., c]).resize((size, size), Image.Resampling.BILINEAR))
        for c in range(image.shape[-1])
    ]
    return np.stack(channels, axis=-1)  # [size, size, C]


@dataclasses.dataclass(frozen=True)
class Preprocess(grain.transforms.Map):
    """uint8 image [H, W, C] -> float32 [S, S, C] in [-1, 1] (S = ``image_size``, or unchanged
    when None); label -> int32 scalar. Runs in Grain's workers, so it is plain numpy/Pillow."""

    image_size: int | None = None

    def map(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
        image = np.asarray(example["image"], np.float32)  # [H, W, C] on 0..255
        if self.image_size and image.shape[:2] != (self.image_size, self.image_size):
            image = resize(image, self.image_size)
        out = {"image": image / 127.5 - 1.0}
        if "label" in example:
            out["label"] = np.asarray(example["label"], np.int32)
        return out


def _shuffle_seed(seed: int) -> int:
    """A 32-bit shuffle seed hashed from ``seed``.

    Grain 0.2.18 shuffles epoch e with seed ``seed + e``, so raw seeds s and s + 1 would give the
    same orders shifted by one epoch; hashing keeps runs with nearby seeds unrelated.
    """
    return int(np.random.SeedSequence(seed).generate_state(1)[0])


def make_dataset(
    source: Sequence[Any],
    *,
    global_batch_size: int,
    image_size: int | None = None,
    seed: int = 0,
    shuffle: bool = True,
    repeat: bool = True,
    drop_remainder: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.MapDataset:
    """This process's dataset of batches ``{"image": f32 [b, S, S, C], "label": i32 [b]}``,
    ``b = global_batch_size // process_count``.

    Sharding: process i reads examples i, i + n, i + 2n, ... (n = ``process_count``) of the first
    ``len(source) - len(source) % n``, so shards are disjoint and equally long; otherwise, without
    ``repeat``, one process could make one more batch than another and wait forever in a
    collective. With ``repeat`` the stream is infinite and each epoch is shuffled anew (the last
    batch of an epoch is completed from the next one); without it, ``drop_remainder`` decides
    whether a short last batch is kept.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index {process_index} is not in [0, {process_count})")
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise DataError(
            f"global batch size {global_batch_size} is not a positive multiple of the "
            f"{process_count} processes"
        )
    local_batch = global_batch_size // process_count
    ds = grain.MapDataset.source(source)
    ds = ds[: len(ds) - len(ds) % process_count]
    ds = ds[process_index::process_count]
    if drop_remainder and len(ds) < local_batch:
        raise DataError(
            f"the dataset has {len(ds)} examples per process ({len(source)} in all, "
            f"{process_count} processes), fewer than one batch of {local_batch}; use a smaller "
            "batch size"
        )
    if shuffle:
        # Shuffle before repeat: each epoch is a permutation of the shard, reseeded per epoch.
        ds = ds.shuffle(seed=_shuffle_seed(seed))
    if repeat:
        ds = ds.repeat(None)
    return ds.map(Preprocess(image_size)).batch(local_batch, drop_remainder=drop_remainder)


def make_iterator(
    dataset: grain.MapDataset, *, worker_count: int = 0, prefetch: int = 4
) -> grain.DatasetIterator:
    """A checkpointable iterator over ``dataset`` (``get_state``/``set_state``; Orbax saves it
    with ``grain.checkpoint.CheckpointSave(it)`` under a ``grain.checkpoint.CheckpointHandler``).

    ``worker_count > 0`` decodes in that many worker processes, each buffering one batch; in the
    main process ``prefetch`` batches are read ahead by two threads (Grain's defaults, 16 threads
    and 500 elements, are tuned for remote disks, not for a few small batches). Close the
    iterator (``it.close()``) when done with workers, or shared memory lingers.
    """
    read = grain.ReadOptions(num_threads=2, prefetch_buffer_size=prefetch)
    ds = dataset.to_iter_dataset(read)
    if worker_count > 0:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(ds)
