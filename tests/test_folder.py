"""``latentjax data build-folder``: a folder of images -> a tfds dataset read by the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from latentjax.commands import main
from latentjax.data import folder, pipeline


@pytest.fixture
def pets(tmp_path):
    """cat/ with 3 images and a text file, dog/ with 2 images and a truncated JPEG."""
    rng = np.random.default_rng(0)
    images = {}
    for cls, n in (("cat", 3), ("dog", 2)):
        (tmp_path / "pets" / cls).mkdir(parents=True)
        for i in range(n):
            image = rng.integers(0, 256, (6 + i, 5, 3), dtype=np.uint8)
            ext = "png" if i % 2 == 0 else "bmp"  # lossless formats: pixels can be compared
            Image.fromarray(image).save(tmp_path / "pets" / cls / f"{i}.{ext}")
            images[f"{i}.{ext}", cls] = image
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image")
    jpeg = tmp_path / "pets" / "dog" / "broken.jpg"
    Image.fromarray(images["0.png", "cat"]).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:40])  # truncated
    return tmp_path / "pets", images


def test_build_folder_cli_skips_and_lists_bad_files(pets, tmp_path, capsys):
    root, images = pets
    data_dir = str(tmp_path / "tfds")
    assert main(["data", "build-folder", str(root), "--name", "pets", "--data-dir", data_dir]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "notes.txt" in out and "broken.jpg" in out
    assert "5 images, 2 classes, 2 skipped" in out

    source = pipeline.load_source("pets", "train", data_dir)
    assert len(source) == 5
    seen = set()
    for i in range(len(source)):
        example = source[i]
        cls = ("cat", "dog")[int(example["label"])]
        name = (
            example["file_name"].decode()
            if isinstance(example["file_name"], bytes)
            else (example["file_name"])
        )
        np.testing.assert_array_equal(example["image"], images[name, cls])  # lossless PNG
        seen.add((name, cls))
    assert seen == set(images)

    # And it trains like any dataset: batches of the requested size, centre-cropped.
    ds = pipeline.make_dataset(
        source, global_batch_size=4, image_size=4, crop="center", process_index=0, process_count=1
    )
    batch = next(iter(ds))
    assert batch["image"].shape == (4, 4, 4, 3) and batch["label"].dtype == np.int32


def test_strict_mode_and_bad_input_are_one_line_errors(pets, tmp_path, capsys):
    root, _ = pets
    data_dir = str(tmp_path / "tfds")
    args = ["data", "build-folder", str(root), "--data-dir", data_dir]
    assert main([*args, "--name", "pets", "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 file(s)" in err[0] and "not readable images" in err[0]
    assert main([*args, "--name", "Bad-Name"]) == 2
    assert "dataset name 'Bad-Name'" in capsys.readouterr().err
    assert main(["data", "build-folder", str(tmp_path / "nowhere"), "--name", "x"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    assert main(["data", "build-folder", str(tmp_path / "empty"), "--name", "x"]) == 2
    assert "no readable images" in capsys.readouterr().err


def test_dataset_smaller_than_a_batch_is_a_clear_error(pets, tmp_path):
    root, _ = pets
    folder.build_folder(root, "few", str(tmp_path / "tfds"))
    source = pipeline.load_source("few", "train", str(tmp_path / "tfds"))
    with pytest.raises(pipeline.DataError, match="fewer than one batch of 8"):
        pipeline.make_dataset(source, global_batch_size=8, process_index=0, process_count=1)
