"""The digits tfds builder and the Grain pipeline (digits are built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from latentjax.data import digits, pipeline


def indexed_source(n: int) -> list[dict[str, np.ndarray]]:
    """n examples whose image encodes the example index (pixel 0: i % 256, pixel 1: i // 256),
    so the order and sharding of a stream can be read back from its batches."""
    out = []
    for i in range(n):
        image = np.zeros((4, 4, 1), np.uint8)
        image[0, 0, 0], image[0, 1, 0] = i % 256, i // 256
        out.append({"image": image, "label": i % 10})
    return out


def indices(batch: dict[str, np.ndarray]) -> list[int]:
    """Inverse of ``indexed_source`` on a preprocessed batch."""
    pixels = np.round((batch["image"][:, 0, :2, 0] + 1.0) * 127.5).astype(int)  # [b, 2]
    return list(pixels[:, 0] + 256 * pixels[:, 1])


def take(it, k: int) -> list[int]:
    return [i for _ in range(k) for i in indices(next(it))]


def stream(source, k: int, **kwargs) -> list[int]:
    """Example indices of the first k batches (8 per batch) of a single-process pipeline."""
    kwargs = {"global_batch_size": 8, "seed": 0, "process_index": 0, "process_count": 1} | kwargs
    return take(pipeline.make_iterator(pipeline.make_dataset(source, **kwargs)), k)


# --- the digits dataset ---------------------------------------------------------------------


def test_digits_built_as_documented(digits_data_dir):
    sk = load_digits()
    expected = np.round(sk.images * 255.0 / 16.0).astype(np.uint8)[..., None]  # [N, 8, 8, 1]
    seen = []
    for split, size in digits.SPLIT_SIZES.items():
        source = pipeline.load_source(digits.NAME, split, digits_data_dir)
        assert len(source) == size
        examples = [source[i] for i in range(len(source))]
        images = np.stack([e["image"] for e in examples])
        labels = np.array([e["label"] for e in examples])
        assert images.dtype == np.uint8 and images.shape == (size, 8, 8, 1)
        assert set(labels) == set(range(10))
        # Rows of load_digits() in this split, in the source's order (matched by content; ties
        # between identical images are resolved by taking unused rows first).
        rows = digits.split_indices()[split]
        np.testing.assert_array_equal(np.sort(labels), np.sort(sk.target[rows]))
        by_bytes: dict[bytes, list[int]] = {}
        for r in rows:
            by_bytes.setdefault(expected[r].tobytes(), []).append(int(r))
        for image, label in zip(images, labels, strict=True):
            r = by_bytes[image.tobytes()].pop()  # decoded pixels equal sklearn's, rescaled
            assert sk.target[r] == label
        seen.extend(rows)
    assert sorted(seen) == list(range(1797))
    assert sum(digits.SPLIT_SIZES.values()) == 1797


def test_prepare_is_idempotent(digits_data_dir):
    files = sorted(Path(digits_data_dir, digits.NAME).rglob("*.array_record*"))
    assert len(files) == 2
    before = [os.stat(f).st_mtime_ns for f in files]
    assert digits.prepare_digits(digits_data_dir) == digits_data_dir
    assert [os.stat(f).st_mtime_ns for f in files] == before


def test_a_build_leaves_no_temporary_folder(tmp_path, monkeypatch):
    """tfds' DatasetInfo makes a temporary folder each time a builder meets a folder not built
    yet, to look for metadata in its bucket, and never removes it; ours do not look."""
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert digits.prepare_digits(str(tmp_path / "data")) == str(tmp_path / "data")
    assert list(temp.iterdir()) == []
    assert pipeline.load_source(digits.NAME, "test", str(tmp_path / "data"))[0]["label"] >= 0


# --- batches --------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [None, 16])
def test_batches_are_normalised(digits_data_dir, image_size):
    source = pipeline.load_source(digits.NAME, "train", digits_data_dir)
    ds = pipeline.make_dataset(
        source, global_batch_size=32, image_size=image_size, seed=0, process_count=1
    )
    batch = next(pipeline.make_iterator(ds))
    size = image_size or 8
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (32, size, size, 1) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
    assert -1.0 <= batch["image"].min() < 0.0 < batch["image"].max() <= 1.0
    assert np.all((0 <= batch["label"]) & (batch["label"] < 10))


def test_unshuffled_batch_matches_source(digits_data_dir):
    source = pipeline.load_source(digits.NAME, "test", digits_data_dir)
    ds = pipeline.make_dataset(
        source, global_batch_size=len(source), shuffle=False, repeat=False, process_count=1
    )
    (batch,) = list(ds)
    np.testing.assert_array_equal(batch["label"], [source[i]["label"] for i in range(len(source))])
    np.testing.assert_allclose(batch["image"][3], source[3]["image"] / 127.5 - 1.0, atol=1e-6)


@pytest.mark.parametrize("process_index", [0, 1])
def test_cached_stream_is_the_uncached_stream(digits_data_dir, process_index):
    # Decoded once into memory, the shard still goes through the same shuffle, random crop,
    # flip and resize: the batches are identical, epoch after epoch.
    source = pipeline.load_source(digits.NAME, "train", digits_data_dir)

    def batches(cache: bool) -> list[dict[str, np.ndarray]]:
        ds = pipeline.make_dataset(
            source,
            global_batch_size=64,
            image_size=12,
            crop="random",
            flip=True,
            seed=4,
            process_index=process_index,
            process_count=2,
            cache=cache,
        )
        it = pipeline.make_iterator(ds)
        return [next(it) for _ in range(30)]  # 30 x 32 > 750 examples in the shard: 2 epochs

    for want, got in zip(batches(False), batches(True), strict=True):
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])


def test_a_cache_too_large_for_memory_is_an_error(monkeypatch):
    monkeypatch.setattr(pipeline, "CACHE_LIMIT_BYTES", 1000)
    with pytest.raises(pipeline.DataError, match=r"data.cache.*set data.cache=False"):
        pipeline.make_dataset(indexed_source(200), global_batch_size=8, cache=True)


def test_no_repeat_drop_remainder():
    source = indexed_source(20)
    full = list(pipeline.make_dataset(source, global_batch_size=8, repeat=False, process_count=1))
    assert [len(b["label"]) for b in full] == [8, 8]
    kept = pipeline.make_dataset(
        source, global_batch_size=8, repeat=False, drop_remainder=False, process_count=1
    )
    batches = list(kept)
    assert [len(b["label"]) for b in batches] == [8, 8, 4]
    assert sorted(i for b in batches for i in indices(b)) == list(range(20))


# --- order ----------------------------------------------------------------------------------


def test_order_is_seeded_and_reshuffled_each_epoch():
    source = indexed_source(24)  # 3 batches of 8 per epoch
    a, b = stream(source, 6, seed=1), stream(source, 6, seed=1)
    assert a == b
    assert stream(source, 6, seed=2) != a
    epoch1, epoch2 = a[:24], a[24:]
    assert sorted(epoch1) == sorted(epoch2) == list(range(24))  # each epoch is a permutation
    assert epoch1 != epoch2
    assert epoch1 != list(range(24))
    assert stream(source, 3, shuffle=False) == list(range(24))


def test_adjacent_seeds_are_unrelated():
    # Grain shuffles epoch e with seed + e; we hash the seed so that seed 1's first epoch is not
    # seed 0's second.
    source = indexed_source(24)
    assert stream(source, 6, seed=0)[24:] != stream(source, 3, seed=1)


def test_process_shards_are_disjoint_and_cover():
    source = indexed_source(21)  # odd: the last example is dropped so shards are equally long
    shards = [
        pipeline.make_dataset(
            source,
            global_batch_size=4,
            seed=3,
            repeat=False,
            drop_remainder=False,
            process_index=p,
            process_count=2,
        )
        for p in range(2)
    ]
    seen = [[i for batch in shard for i in indices(batch)] for shard in shards]
    assert len(seen[0]) == len(seen[1]) == 10
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(20))
    assert all(len(b["label"]) == 2 for shard in shards for b in shard[:5])  # 4 // 2 per process


# --- resuming -------------------------------------------------------------------------------


def test_restored_iterator_continues():
    ds = pipeline.make_dataset(
        indexed_source(24), global_batch_size=8, seed=5, process_index=0, process_count=1
    )
    it = pipeline.make_iterator(ds)
    take(it, 4)  # past the first epoch boundary
    state = it.get_state()
    expected = take(it, 3)
    restored = pipeline.make_iterator(ds)
    restored.set_state(state)
    assert take(restored, 3) == expected


def test_restored_iterator_continues_with_workers(digits_data_dir):
    source = pipeline.load_source(digits.NAME, "test", digits_data_dir)
    ds = pipeline.make_dataset(source, global_batch_size=4, seed=7, process_count=1)
    it = pipeline.make_iterator(ds, worker_count=2)
    try:
        for _ in range(3):
            next(it)
        state = it.get_state()
        expected = next(it)
    finally:
        it.close()  # one set of workers at a time: this machine has few cores
    restored = pipeline.make_iterator(ds, worker_count=2)
    try:
        restored.set_state(state)
        got = next(restored)
    finally:
        restored.close()
    np.testing.assert_array_equal(got["image"], expected["image"])
    np.testing.assert_array_equal(got["label"], expected["label"])


# --- errors ---------------------------------------------------------------------------------


def test_batch_larger_than_dataset():
    with pytest.raises(ValueError, match="fewer than one batch"):
        pipeline.make_dataset(indexed_source(10), global_batch_size=16, process_count=1)
    with pytest.raises(ValueError, match="fewer than one batch"):  # 5 per process < 6
        pipeline.make_dataset(
            indexed_source(10), global_batch_size=12, process_index=1, process_count=2
        )


def test_batch_not_divisible_by_processes():
    with pytest.raises(ValueError, match="not a positive multiple of the 2 processes"):
        pipeline.make_dataset(
            indexed_source(10), global_batch_size=3, process_index=0, process_count=2
        )


def test_unknown_or_unprepared_dataset(tmp_path, digits_data_dir):
    with pytest.raises(ValueError, match="unknown dataset 'no_such_dataset'"):
        pipeline.load_source("no_such_dataset", "train", str(tmp_path))
    with pytest.raises(ValueError, match=f"'mnist' is not prepared in data_dir '{tmp_path}'"):
        pipeline.load_source("mnist", "train", str(tmp_path))
    with pytest.raises(ValueError, match="split 'validation'"):
        pipeline.load_source(digits.NAME, "validation", digits_data_dir)
