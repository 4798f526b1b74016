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
    assert "5 images (3 train, 2 test), 2 classes, 2 skipped" in out

    seen = set()
    for split, count in (("train", 3), ("test", 2)):
        source = pipeline.load_source("pets", split, data_dir)
        assert len(source) == count
        seen |= _checked(source, images)
    assert seen == set(images)

    # And it trains like any dataset: batches of the requested size, centre-cropped.
    source = pipeline.load_source("pets", "train", data_dir)
    ds = pipeline.make_dataset(
        source, global_batch_size=2, image_size=4, crop="center", process_index=0, process_count=1
    )
    batch = next(iter(ds))
    assert batch["image"].shape == (2, 4, 4, 3) and batch["label"].dtype == np.int32


def _checked(source, images) -> set:
    """The (file, class) of every example, each checked to hold its file's pixels."""
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
    return seen


def test_held_out_split_is_spread_over_each_class_and_keeps_train():
    files = [(str(i), 0) for i in range(10)] + [("a", 1)] + [(f"b{i}", 2) for i in range(3)]
    test = folder.held_out(files, 0.1)
    assert test == {5, 12}  # 1 of 10 (the middle one); a lone file stays in train; 1 of 3
    assert folder.held_out(files, 0.0) == set()
    most = folder.held_out(files, 0.9)
    for members in (range(10), [10], [11, 12, 13]):  # every class keeps a file for train
        assert any(i not in most for i in members)
    assert len(most) == 9 + 0 + 2


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    ramp = (np.arange(8 * 8, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)
    (tmp_path / "in").mkdir()
    Image.fromarray(ramp).save(tmp_path / "in" / "ramp.png")  # mode I;16
    folder.build_folder(tmp_path / "in", "ramp", str(tmp_path / "tfds"), channels=1)
    got = pipeline.load_source("ramp", "train", str(tmp_path / "tfds"))[0]["image"][..., 0]
    want = np.round(ramp / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(got, want)
    assert (got == 255).mean() < 0.05  # Pillow's own convert made 99% of it white


def test_special_files_are_listed_as_skipped_not_read(tmp_path):
    import os

    (tmp_path / "in" / "cls").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "in" / "cls" / "a.png")
    os.mkfifo(tmp_path / "in" / "cls" / "pipe")  # opening it to read would block forever
    (tmp_path / "in" / "cls" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    scan = folder.scan_folder(tmp_path / "in")
    skipped = {p.name: why for p, why in scan.skipped}
    assert skipped == {"pipe": "not a regular file", "dangling.png": "a link to nothing"}


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


def test_a_dataset_whose_channels_the_model_does_not_take_is_one_line(pets, tmp_path, capsys):
    root, _ = pets
    data_dir = str(tmp_path / "tfds")
    folder.build_folder(root, "pets", data_dir)  # RGB
    argv = ["train", "--config", "ae/digits.py", "--workdir", str(tmp_path / "w")]
    argv += [f"--config.data.data_dir={data_dir}", "--config.data.name=pets"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 3-channel images, the model takes 1" in err[0], err
    assert not (tmp_path / "w").exists()


def test_building_and_reading_local_data_prints_no_download_or_opencv_noise(pets, tmp_path):
    import os
    import subprocess
    import sys

    root, _ = pets
    env = {**os.environ, "LATENTJAX_DATA_DIR": str(tmp_path / "tfds")}
    build = [sys.executable, "-m", "latentjax", "data", "build-folder", str(root), "--name", "pets"]
    # Reading the images back (decoding them) is where tfds warns about OpenCV.
    train = [sys.executable, "-m", "latentjax", "train", "--config", "ae/digits.py"]
    train += ["--workdir", str(tmp_path / "w"), "--config.data.name=pets"]
    for argv, code in ((build, 0), (train, 2)):
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == code, out.stderr[-2000:]
        text = out.stdout + out.stderr
        for noise in ("Downloading and preparing", "Unknown size", "OpenCV", "dataset_info.json"):
            assert noise not in text, text[-2000:]
