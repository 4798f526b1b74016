"""What the tfds builders of data already on this machine share (the embedded digits and photo
crops, image folders, latent caches)."""

from __future__ import annotations

import functools
import logging


def prepare(builder_class, data_dir: str) -> str:
    """Builds the dataset of ``builder_class`` (a tfds builder of data already here) under
    ``data_dir`` unless it is there; returns ``data_dir``.

    Idempotent: a prepared dataset (same version) is left untouched. tfds writes into a temporary
    folder and renames it at the end, so an interrupted build leaves nothing half-written.
    array_record gives random access (``tfds.data_source``) and, unlike tfds' default tfrecord,
    is written without TensorFlow."""
    import tensorflow_datasets as tfds

    builder = builder_class(data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS,
            )
        )
    return data_dir


def dataset_info(**kwargs):
    """``tfds.core.DatasetInfo(**kwargs)`` for data built here. tfds' ``DatasetInfo`` looks for
    precomputed metadata in its public bucket whenever a builder meets a folder not built yet
    (``initialize_from_bucket``), and makes a temporary folder for it before it looks, which it
    never removes: one empty ``/tmp/tmp*tfds`` per dataset, cache or image folder built. Nothing
    built here is in that bucket, so this info does not look."""
    return _local_info_class()(**kwargs)


@functools.cache
def _local_info_class():
    import tensorflow_datasets as tfds

    class LocalInfo(tfds.core.DatasetInfo):
        def initialize_from_bucket(self) -> None:
            """Nothing to fetch: the data is built on this machine (``dataset_info``)."""

    return LocalInfo


class LocalBuild:
    """A mixin for a ``tfds.core.GeneratorBasedBuilder`` of data that is already here: tfds'
    "Downloading and preparing dataset Unknown size ..." would read as a download; one line
    says what happens instead."""

    def _log_download_bytes(self) -> None:
        print(f"latentjax: building dataset {self.name!r} in {self.data_dir} (once)")

    def _log_download_done(self) -> None:
        pass


class _Unactionable(logging.Filter):
    """tfds' warnings that tell a latentjax user nothing they could act on."""

    NOISE = (
        "OpenCV is not installed",  # decoding with Pillow is what latentjax wants
        "has no dataset_info.json",  # a variant folder being built for the first time
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in self.NOISE)


def quiet_tfds() -> None:
    """Drops :class:`_Unactionable` warnings from absl's logger (which tfds logs through), and
    tfds' progress bars for builds that take a second."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _Unactionable) for f in logger.filters):
        logger.addFilter(_Unactionable())
