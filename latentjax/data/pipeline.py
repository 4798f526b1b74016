"""Grain input pipelines over tensorflow-datasets sources.

``tfds.data_source`` gives random access to an array_record dataset; Grain turns it into a
deterministic stream:

    source -> shard by process -> seeded shuffle (a new order every epoch) -> repeat
           -> crop/resize/flip/normalise -> batch of global_batch_size / process_count

Random transforms (random crop, horizontal flip) draw from a generator that Grain derives from
the transform seed and the element's position in the repeated stream (``MapDataset.random_map``),
so an example's augmentation is fixed by (seed, epoch, index), whatever the worker count and
across a resume.

Each process reads only its own shard and yields its part of the global batch; the trainer
assembles the global array (``jax.make_array_from_process_local_data``). The iterator's position
is a small state (``it.get_state()``) that Orbax saves with every checkpoint through
``grain.checkpoint.CheckpointHandler``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from latentjax import paths
from latentjax.data import digits, moving_digits, photo_pans, photos
from latentjax.errors import ConfigError


class DataError(ConfigError, ValueError):
    """A dataset that is unknown or not prepared, or a batch that does not fit it.

    A ``ConfigError`` so the CLI prints it as one line, and a ``ValueError`` for library callers.
    """


def check_local_data_dir(data_dir: str, what: str) -> None:
    """ArrayRecord files (tfds datasets, the latent cache) are read and written as local files:
    a bucket URL is one line naming the way that works, a gcsfuse mount. (Reading a dataset
    through ``gs://`` hung in the reader against the GCS emulator; writing one fails.)"""
    if not paths.is_local(data_dir):
        raise DataError(
            f"{what}={data_dir}: ArrayRecord datasets are read and written as local files; "
            "use a local folder, or mount the bucket with gcsfuse "
            "(launch/tpu_pod.sh --gcsfuse BUCKET:MOUNT) and name the folder under the mount"
        )


def load_source(name: str, split: str, data_dir: str) -> Sequence[dict[str, Any]]:
    """Random-access source (``len`` and ``[i]``) of a prepared tfds dataset.

    The embedded digits (``digits.NAME``), moving digits (``moving_digits.NAME``), photo crops
    (``photos.NAME``) and photo pans (``photo_pans.NAME``) are built on first use (and again for a
    newer version of their builder); every other dataset must have been prepared in ``data_dir``
    in array_record format beforehand (nothing is downloaded).
    """
    check_local_data_dir(data_dir, "data_dir")
    if name == digits.NAME:
        digits.prepare_digits(data_dir)
    if name == moving_digits.NAME:
        moving_digits.prepare_moving_digits(data_dir)
    if name == photos.NAME:
        photos.prepare_photos(data_dir)
    if name == photo_pans.NAME:
        photo_pans.prepare_photo_pans(data_dir)
    try:
        # download=False: otherwise tfds tries to build a missing dataset in its default
        # (tfrecord) format, which needs TensorFlow.
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except tfds.core.registered.DatasetNotFoundError as e:
        # tfds' own message lists all ~1,000 registered datasets: keep ours to one line.
        raise DataError(
            f"unknown dataset {name!r}: no tfds builder of that name and none prepared in "
            f"data_dir {data_dir!r}"
        ) from e
    except (ValueError, NotImplementedError, AssertionError) as e:
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            raise DataError(
                f"dataset {name!r} is not prepared in data_dir {data_dir!r} (looked in "
                f"{builder.data_dir}); prepare it there with file_format='array_record'"
            ) from e
        # An unknown split, or a dataset prepared only as tfrecord.
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


CROPS = ("none", "center", "random")


def crop_box(
    height: int, width: int, crop: str, rng: np.random.Generator | None, min_scale: float
) -> tuple[int, int, int]:
    """(top, left, side) of a square crop: the largest centred square for "center" (as ADM's
    ``center_crop_arr``), a square of side ``min(H, W) * s``, ``s ~ U[min_scale, 1]``, at a
    uniform position for "random", the whole image (side = -1) for "none"."""
    if crop == "none":
        return 0, 0, -1
    short = min(height, width)
    if crop == "center":
        return (height - short) // 2, (width - short) // 2, short
    side = max(1, int(round(short * rng.uniform(min_scale, 1.0))))
    return int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1)), side


def example_key(example: dict[str, Any]) -> str:
    """The key of an example's pixels: "video" for a clip [T, H, W, C], else "image"."""
    return "video" if "video" in example else "image"


def clip_frames(source: Sequence[dict[str, Any]]) -> int:
    """Frames per clip of a video dataset's ``source`` (its first example's)."""
    return int(np.asarray(source[0]["video"]).shape[0])


@dataclasses.dataclass(frozen=True)
class Preprocess(grain.transforms.RandomMap):
    """uint8 image [H, W, C] -> float32 [S, S, C] in [-1, 1]: crop (``CROPS``), antialiased
    resize to S = ``image_size`` (unchanged when None), horizontal flip with probability 1/2
    when ``flip``; label -> int32 scalar. Runs in Grain's workers, so it is plain numpy/Pillow.
    ``rng`` is Grain's per-element generator (see the module docstring).

    A clip (key "video", uint8 [T, H, W, C]) becomes float32 [T, S, S, C] the same way, with
    one crop box and one flip draw for all its frames (a crop that moved between frames would
    be motion the clip does not have)."""

    image_size: int | None = None
    crop: str = "none"
    flip: bool = False
    min_scale: float = 0.5

    def __post_init__(self):
        if self.crop not in CROPS:
            raise DataError(f"data.crop={self.crop!r}; use one of {CROPS}")

    def random_map(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        key = example_key(example)
        x = np.asarray(example[key])  # [H, W, C] or [T, H, W, C] uint8
        top, left, side = crop_box(*x.shape[-3:-1], self.crop, rng, self.min_scale)
        if side > 0:
            x = x[..., top : top + side, left : left + side, :]
        x = x.astype(np.float32)  # on 0..255
        if self.image_size and x.shape[-3:-1] != (self.image_size, self.image_size):
            if x.ndim == 3:
                x = resize(x, self.image_size)
            else:
                x = np.stack([resize(frame, self.image_size) for frame in x])
        if self.flip and rng.random() < 0.5:
            x = x[..., ::-1, :]
        out = {key: np.ascontiguousarray(x / 127.5 - 1.0, np.float32)}
        if "label" in example:
            out["label"] = np.asarray(example["label"], np.int32)
        return out


def _shuffle_seed(seed: int, purpose: int = 0) -> int:
    """A 32-bit seed hashed from ``seed`` (and ``purpose``: 0 shuffles, 1 augments).

    Grain 0.2.18 shuffles epoch e with seed ``seed + e``, so raw seeds s and s + 1 would give the
    same orders shifted by one epoch; hashing keeps runs with nearby seeds unrelated.
    """
    entropy = seed if purpose == 0 else [seed, purpose]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def make_dataset(
    source: Sequence[Any],
    *,
    global_batch_size: int,
    image_size: int | None = None,
    crop: str = "none",
    flip: bool = False,
    seed: int = 0,
    shuffle: bool = True,
    repeat: bool = True,
    drop_remainder: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    transform: grain.transforms.Map | None = None,
    cache: bool = False,
) -> grain.MapDataset:
    """This process's dataset of batches ``{"image": f32 [b, S, S, C], "label": i32 [b]}``
    (``"video"``: f32 [b, T, S, S, C] for a video dataset), ``b = global_batch_size //
    process_count``.

    Sharding: process i reads examples i, i + n, i + 2n, ... (n = ``process_count``) of the first
    ``len(source) - len(source) % n``, so shards are disjoint and equally long; otherwise, without
    ``repeat``, one process could make one more batch than another and wait forever in a
    collective. With ``repeat`` the stream is infinite and each epoch is shuffled anew (the last
    batch of an epoch is completed from the next one); without it, ``drop_remainder`` decides
    whether a short last batch is kept. ``transform`` replaces the image preprocessing (e.g.
    for cached latents); ``source`` may also be a ``grain.MapDataset``.

    ``cache`` reads and decodes this process's shard once, up front, and serves it from host
    memory (as ``tf.data``'s ``cache()``): for small datasets (the digits, the photos), where
    decoding each record again every epoch is most of the pipeline's time. Crops, flips and the
    resize still run per element, so the stream is the same as without it. A shard larger than
    ``CACHE_LIMIT_BYTES`` decoded is an error.
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
    ds = source if isinstance(source, grain.MapDataset) else grain.MapDataset.source(source)
    ds = ds[: len(ds) - len(ds) % process_count]
    ds = ds[process_index::process_count]
    if cache:
        ds = grain.MapDataset.source(_decode_all(ds))
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
    if transform is not None:
        ds = ds.map(transform)
    else:
        # After repeat: the element index (hence the random draw) differs from epoch to epoch.
        ds = ds.random_map(Preprocess(image_size, crop, flip), seed=_shuffle_seed(seed, 1))
    return ds.batch(local_batch, drop_remainder=drop_remainder)


CACHE_LIMIT_BYTES = 4 << 30


def _decode_all(ds: grain.MapDataset) -> list[Any]:
    """Every element of ``ds``, decoded, in order (see ``make_dataset(cache=True)``)."""
    if not len(ds):
        return []
    first = ds[0]
    estimate = len(ds) * sum(np.asarray(v).nbytes for v in jax.tree.leaves(first))
    if estimate > CACHE_LIMIT_BYTES:
        raise DataError(
            f"data.cache: this process's {len(ds)} examples take about {estimate / 2**30:.1f} "
            f"GiB decoded, over the {CACHE_LIMIT_BYTES / 2**30:.0f} GiB cache limit; set "
            "data.cache=False"
        )
    return [first] + [ds[i] for i in range(1, len(ds))]


def split_arrays(data, split: str, limit: int | None = None) -> dict[str, np.ndarray]:
    """A whole (small) split of the dataset a ``data`` config section names, or its first
    ``limit`` examples, preprocessed as for evaluation (centre crop where training crops, no
    flips), as host arrays in dataset order."""
    source = load_source(data.name, split, data.data_dir or digits.default_data_dir())
    if limit is not None and limit < len(source):
        source = grain.MapDataset.source(source)[:limit]
    dataset = make_dataset(
        source,
        global_batch_size=len(source),
        image_size=data.image_size,
        crop="center" if data.crop != "none" else "none",
        seed=0,
        shuffle=False,
        repeat=False,
        drop_remainder=False,
        process_index=0,
        process_count=1,
    )
    return next(iter(dataset))


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


class DevicePrefetch:
    """Global device batches ``size`` steps ahead of the train step: the host-to-device copy of
    the next batches overlaps the (asynchronously dispatched) current step.

    Checkpointable like the iterator it wraps: the state it reports is the wrapped iterator's
    state *before* the oldest batch not yet handed out, so a resume neither skips nor repeats
    the batches that sat in the buffer. Grain's checkpoint handler takes it as JSON bytes.
    """

    def __init__(self, iterator, mesh, size: int = 2):
        from latentjax.parallel import mesh as mesh_lib

        self._it, self._size = iterator, size
        self._put = lambda local: mesh_lib.global_batch(local, mesh)
        self._buffer: collections.deque = collections.deque()

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, jax.Array]:
        while len(self._buffer) < self._size + 1:
            state = self._it.get_state()
            try:
                local = next(self._it)
            except StopIteration:
                break
            self._buffer.append((state, self._put(local)))
        if not self._buffer:
            raise StopIteration
        return self._buffer.popleft()[1]

    def get_state(self) -> bytes:
        state = self._buffer[0][0] if self._buffer else self._it.get_state()
        return json.dumps(state).encode()

    def set_state(self, state: bytes) -> None:
        self._buffer.clear()
        self._it.set_state(json.loads(state))

    def start_prefetch(self) -> None:
        """Called by Grain's checkpoint handler after a restore."""
        start = getattr(self._it, "start_prefetch", None)
        if start is not None:
            start()

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()
