"""A folder of images as a tensorflow-datasets dataset (array_record, PNG-encoded images).

    DIR/cat/001.jpg, DIR/cat/002.png, DIR/dog/xyz.webp, ...   -> labels cat = 0, dog = 1

Class subfolders, sorted by name, become labels 0..K-1 (a folder without subfolders is one
class). Every file is opened with Pillow; a file Pillow cannot decode (not an image, truncated,
unreadable) is skipped and listed, or with ``strict`` is an error. Images are converted to RGB
(or grey with ``channels=1``; 16-bit images are scaled to 8 bits), re-encoded as PNG with Pillow
(tfds' own encoder needs TensorFlow) and written in a fixed order (class, then file name), so two
builds of the same folder are identical. A held-out ``test`` split takes ``test_fraction`` of
each class, evenly spread over its files in name order (deterministic, no seed), the rest is
``train``. The result is read like any tfds dataset: ``tfds.data_source(NAME, data_dir=...)``, or
``--config.data.name=NAME`` in a config (which evaluates on its ``test`` split).
"""

from __future__ import annotations

import dataclasses
import io
import re

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from latentjax import paths as paths_lib
from latentjax.data import local, pipeline
from latentjax.data.local import LocalBuild
from latentjax.data.pipeline import DataError
from latentjax.paths import Path, as_path

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass
class FolderScan:
    """What a folder holds: readable image files with their labels, and what was skipped."""

    classes: list[str]
    files: list[tuple[Path, int]]
    skipped: list[tuple[Path, str]]


def scan_folder(root: str | Path) -> FolderScan:
    """Lists the images under ``root`` (decoding each once) and the files that are not."""
    root = as_path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        classes = [p.name for p in subdirs]
        groups = [(sorted(_files(p)), label) for label, p in enumerate(subdirs)]
        stray = [(p, "not in a class subfolder") for p in sorted(root.iterdir()) if not p.is_dir()]
    else:
        classes, groups, stray = [root.name], [(sorted(_files(root)), 0)], []
    files, skipped = [], list(stray)
    for paths, label in groups:
        for path in paths:
            problem = _check_image(path)
            if problem is None:
                files.append((path, label))
            else:
                skipped.append((path, problem))
    if not files:
        raise DataError(f"no readable images under {root}")
    return FolderScan(classes, files, skipped)


def _files(directory: Path) -> list[Path]:
    """Every entry under ``directory`` but folders and hidden names: regular files, and the
    others (FIFOs, sockets, devices, broken links), which the scan lists as skipped."""
    return [p for p in paths_lib.files_under(directory) if not p.name.startswith(".")]


def _check_image(path: Path) -> str | None:
    """None if Pillow decodes ``path`` completely, else why not (one line)."""
    if not paths_lib.is_regular_file(
        path
    ):  # never opened: reading a FIFO or a device could block or never end
        return "not a regular file" if path.exists() else "a link to nothing"
    try:
        with path.open("rb") as f, Image.open(f) as im:
            im.load()  # decodes every pixel: catches truncated files that verify() lets through
    except Exception as e:  # noqa: BLE001 - any decoding failure means "not an image" here
        text = str(e).strip().splitlines()
        return text[0][:200] if text else type(e).__name__
    return None


def png_bytes(path: Path, channels: int) -> bytes:
    with path.open("rb") as f, Image.open(f) as im:
        im = _eight_bit(im).convert("RGB" if channels == 3 else "L")
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    return buf.getvalue()


def _eight_bit(im: Image.Image) -> Image.Image:
    """Grey images of more than 8 bits (16-bit PNG or TIFF: Pillow's "I;16" and "I" modes,
    floats: "F") scaled to 8 bits; Pillow's own ``convert`` clips them at 255, which turns
    most of a 16-bit image white."""
    if im.mode.startswith("I;16") or im.mode == "I":
        x = np.asarray(im, np.float64)
        x = x / 257.0 if im.mode.startswith("I;16") or x.max() > 255 else x  # 65535 -> 255
    elif im.mode == "F":
        x = np.asarray(im, np.float64)
        x = x * 255.0 if x.max() <= 1.0 else x  # floats in [0, 1], or already on 0..255
    else:
        return im
    return Image.fromarray(np.clip(np.round(x), 0, 255).astype(np.uint8), "L")


class ImageFolderBuilder(LocalBuild, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A folder of images; the dataset's name is the one given to :func:`build_folder`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Built from a folder of images."}

    def __init__(self, *, scan=None, channels: int = 3, test_fraction: float = 0.0, **kwargs):
        self._scan, self._channels, self._test = scan, channels, test_fraction
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        classes = self._scan.classes if self._scan is not None else None
        return local.dataset_info(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, self._channels)),
                    "label": tfds.features.ClassLabel(names=classes),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        test = held_out(self._scan.files, self._test)
        splits = {"train": [f for i, f in enumerate(self._scan.files) if i not in test]}
        if test:
            splits["test"] = [f for i, f in enumerate(self._scan.files) if i in test]
        return {name: self._generate_examples(files) for name, files in splits.items()}

    def _generate_examples(self, files):
        for i, (path, label) in enumerate(files):
            example = {
                "image": png_bytes(path, self._channels),
                "label": label,
                "file_name": str(path.name),
            }
            yield i, example


def held_out(files: list[tuple[Path, int]], fraction: float) -> set[int]:
    """Indices into ``files`` of the test split: in each class of n files (in name order),
    c = max(1, round(n * fraction)) of them (none for a single file, or ``fraction`` 0), at the
    evenly spread positions floor((j + 1/2) n / c), j = 0 .. c-1; a class keeps at least one
    file for train."""
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(files):
        by_class.setdefault(label, []).append(i)
    test: set[int] = set()
    for members in by_class.values():
        n = len(members)
        if fraction <= 0 or n < 2:
            continue
        count = min(n - 1, max(1, round(n * fraction)))
        test.update(members[int((j + 0.5) * n / count)] for j in range(count))
    return test


def build_folder(
    root: str | Path,
    name: str,
    data_dir: str,
    *,
    strict: bool = False,
    channels: int = 3,
    test_fraction: float = 0.1,
) -> FolderScan:
    """Builds dataset ``name`` (splits ``train`` and, with ``test_fraction`` > 0, ``test``) from
    the images under ``root`` into ``data_dir``; returns the scan (``.skipped`` lists the files
    left out)."""
    pipeline.check_local_data_dir(data_dir, "--data-dir")
    if not NAME_PATTERN.match(name):
        raise DataError(f"dataset name {name!r}: use lower case letters, digits and '_'")
    if channels not in (1, 3):
        raise DataError(f"channels={channels}; use 1 (grey) or 3 (RGB)")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test fraction {test_fraction}: use a value in [0, 1)")
    scan = scan_folder(root)
    if strict and scan.skipped:
        path, why = scan.skipped[0]
        raise DataError(
            f"{len(scan.skipped)} file(s) under {root} are not readable images, e.g. {path}: "
            f"{why} (without --strict they are skipped)"
        )
    builder_class = type(
        name,
        (ImageFolderBuilder,),
        {"name": name, "__module__": __name__},
        skip_registration=True,
    )
    builder = builder_class(
        scan=scan,
        channels=channels,
        test_fraction=test_fraction,
        data_dir=data_dir,
        file_format="array_record",
    )
    if builder.is_prepared():
        raise DataError(f"dataset {name!r} already exists in {builder.data_dir}; remove it first")
    builder.download_and_prepare()
    return scan
