"""Grain input pipelines over tensorflow-datasets sources.

``tfds.data_source`` gives random access to an array_record dataset; Grain turns it into a
deterministic stream: shard by process -> seeded shuffle (a new order every epoch) -> repeat ->
decode/resize/normalise -> batch. Each process reads only its own shard and yields its part of the
global batch; the trainer assembles the global array. The iterator's position is a small JSON
state that Orbax saves with every checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from latentjax.data import digits
from latentjax.errors import ConfigError


def load_source(name: str, split: str, data_dir: str):
    """Random-access source for a prepared tfds dataset (the embedded digits are built on
    first use)."""
    if name == digits.NAME:
        digits.prepare_digits(data_dir)
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as e:  # tfds raises several types for "not there"
        raise ConfigError(
            f"dataset {name!r} split {split!r} is not prepared in {data_dir}: "
            f"{str(e).strip().splitlines()[0][:200]}"
        ) from e


@dataclasses.dataclass(frozen=True)
class Preprocess(grain.transforms.Map):
    """uint8 image [H, W, C] -> float32 in [-1, 1], resized to ``image_size`` (bilinear,
    antialiased when shrinking); label -> int32."""

    image_size: int | None = None

    def map(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
        image = np.asarray(example["image"])
        if self.image_size and image.shape[:2] != (self.image_size, self.image_size):
            image = resize(image, self.image_size)
        out = {"image": image.astype(np.float32) / 127.5 - 1.0}
        if "label" in example:
            out["label"] = np.asarray(example["label"], np.int32)
        return out


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes a uint8 [H, W, C] image to [size, size, C] with Pillow's bilinear filter."""
    squeeze = image.shape[-1] == 1
    pil = Image.fromarray(image[..., 0] if squeeze else image)
    out = np.asarray(pil.resize((size, size), Image.BILINEAR))
    return out[..., None] if squeeze else out


def make_dataset(
    source,
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
    """The per-process dataset of batches (``global_batch_size / process_count`` each)."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size % process_count:
        raise ConfigError(
            f"global batch size {global_batch_size} is not divisible by {process_count} processes"
        )
    local_batch = global_batch_size // process_count
    ds = grain.MapDataset.source(source)[process_index::process_count]
    if drop_remainder and len(ds) < local_batch:
        raise ConfigError(
            f"the dataset has {len(ds)} examples per process, fewer than one batch of "
            f"{local_batch}; use a smaller batch size"
        )
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if repeat:
        ds = ds.repeat(None)
    return ds.map(Preprocess(image_size)).batch(local_batch, drop_remainder=drop_remainder)


def make_iterator(dataset: grain.MapDataset, *, worker_count: int = 0):
    """A checkpointable iterator (``get_state``/``set_state``); ``worker_count > 0`` decodes in
    that many worker processes."""
    ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    if worker_count > 0:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(ds)
