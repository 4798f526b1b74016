"""Crops, antialiased resize and flips; their determinism in (seed, epoch, index) across
workers and resumes; device prefetch keeps the checkpointed position exact; tfds by name."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from latentjax.data import pipeline
from latentjax.parallel import mesh as mesh_lib


def _source(n: int = 12, height: int = 6, width: int = 10) -> list[dict]:
    """Example i: a ramp image whose value encodes (i, row, column), label i."""
    rows = np.arange(height)[:, None, None]
    cols = np.arange(width)[None, :, None]
    return [
        {"image": (i * 20 + rows * 3 + (cols > width // 2)).astype(np.uint8), "label": i}
        for i in range(n)
    ]


def _stream(source, k: int, **kwargs) -> list[np.ndarray]:
    kwargs = {"global_batch_size": 4, "seed": 0, "process_index": 0, "process_count": 1} | kwargs
    it = pipeline.make_iterator(pipeline.make_dataset(source, **kwargs))
    return [next(it)["image"] for _ in range(k)]


def test_resize_is_antialiased():
    # A one-pixel checkerboard of 0 and 255 averages to 127.5 over any 8x8 block; point
    # sampling would return only 0s and 255s.
    board = ((np.indices((64, 64)).sum(0) % 2) * 255.0).astype(np.float32)[..., None]
    small = pipeline.resize(board, 8)
    assert small.shape == (8, 8, 1)
    np.testing.assert_allclose(small[1:-1, 1:-1], 127.5, atol=1.0)
    assert np.all(small >= 0) and np.all(small <= 255)


def test_centre_and_random_crop_boxes():
    assert pipeline.crop_box(6, 10, "center", None, 1.0) == (0, 2, 6)
    assert pipeline.crop_box(9, 4, "center", None, 1.0) == (2, 0, 4)
    rng = np.random.default_rng(0)
    boxes = {pipeline.crop_box(6, 10, "random", rng, 0.5) for _ in range(200)}
    assert len(boxes) > 10
    for top, left, side in boxes:
        assert 3 <= side <= 6 and 0 <= top <= 6 - side and 0 <= left <= 10 - side
    with pytest.raises(pipeline.DataError, match="data.crop='middle'"):
        pipeline.Preprocess(crop="middle")


def test_centre_crop_then_resize_matches_numpy():
    example = _source(1)[0]
    out = pipeline.Preprocess(image_size=None, crop="center").random_map(
        example, np.random.default_rng(0)
    )
    expected = example["image"][:, 2:8].astype(np.float32) / 127.5 - 1.0
    np.testing.assert_array_equal(out["image"], expected)


def test_flip_and_random_crop_are_deterministic_per_seed_epoch_and_index():
    source = _source()
    plain = _stream(source, 6, image_size=6, crop="center")
    aug = dict(image_size=6, crop="center", flip=True)
    a, b = _stream(source, 6, **aug), _stream(source, 6, **aug)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)  # same seed: same flips
    flipped = [
        not np.array_equal(x[i], p[i]) for x, p in zip(a, plain, strict=True) for i in range(4)
    ]
    for x, p in zip(a, plain, strict=True):  # every image is the original or its mirror
        for i in range(4):
            assert np.array_equal(x[i], p[i]) or np.array_equal(x[i], p[i][:, ::-1])
    assert 0 < sum(flipped) < len(flipped)
    # Epoch 2 (batches 3-5) visits the same 12 examples with fresh draws: some example is
    # flipped in one epoch and not in the other.
    it = pipeline.make_iterator(
        pipeline.make_dataset(
            source, global_batch_size=4, seed=0, process_index=0, process_count=1, **aug
        )
    )
    epochs = [{}, {}]
    for k in range(6):
        batch = next(it)
        for image, label in zip(batch["image"], batch["label"], strict=True):
            epochs[k // 3][int(label)] = image
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(12))
    assert any(not np.array_equal(epochs[0][i], epochs[1][i]) for i in range(12))
    other = _stream(source, 6, seed=1, **aug)
    assert any(not np.array_equal(x, y) for x, y in zip(a, other, strict=True))
    rc = dict(image_size=4, crop="random")
    np.testing.assert_array_equal(
        np.stack(_stream(source, 3, **rc)), np.stack(_stream(source, 3, **rc))
    )


def test_same_augmentations_with_worker_processes_and_after_a_resume():
    source = _source()
    kwargs = dict(
        global_batch_size=4,
        image_size=4,
        crop="random",
        flip=True,
        seed=3,
        process_index=0,
        process_count=1,
    )
    expected = _stream(source, 5, **kwargs)
    it = pipeline.make_iterator(pipeline.make_dataset(source, **kwargs), worker_count=1)
    try:
        with_workers = [next(it)["image"] for _ in range(5)]
    finally:
        it.close()
    it = pipeline.make_iterator(pipeline.make_dataset(source, **kwargs))
    resumed = [next(it)["image"] for _ in range(2)]
    state = it.get_state()
    it = pipeline.make_iterator(pipeline.make_dataset(source, **kwargs))
    it.set_state(state)
    resumed += [next(it)["image"] for _ in range(3)]
    for x, y, z in zip(with_workers, resumed, expected, strict=True):
        np.testing.assert_array_equal(x, z)
        np.testing.assert_array_equal(y, z)


def test_device_prefetch_checkpoints_the_consumed_position():
    source = _source()
    mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    ds = pipeline.make_dataset(
        source, global_batch_size=4, seed=0, process_index=0, process_count=1
    )
    expected = [next(it)["label"] for it in [pipeline.make_iterator(ds)] for _ in range(6)]
    pre = pipeline.DevicePrefetch(pipeline.make_iterator(ds), mesh, size=2)
    got = [np.asarray(next(pre)["label"]) for _ in range(3)]  # 3 more are buffered
    state = pre.get_state()
    fresh = pipeline.DevicePrefetch(pipeline.make_iterator(ds), mesh, size=2)
    fresh.set_state(state)
    got += [np.asarray(next(fresh)["label"]) for _ in range(3)]
    for x, y in zip(got, expected, strict=True):
        np.testing.assert_array_equal(x, y)


def test_any_tfds_dataset_by_name(tmp_path):
    """A registered tfds dataset prepared in data_dir (here tfds' mock of mnist, generated from
    the builder's own features) goes through the same pipeline."""
    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        source = pipeline.load_source("mnist", "train", str(tmp_path))
        assert len(source) == 16
        ds = pipeline.make_dataset(
            source, global_batch_size=8, image_size=14, process_index=0, process_count=1
        )
        batch = next(iter(ds))
    assert batch["image"].shape == (8, 14, 14, 1) and batch["label"].shape == (8,)
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
