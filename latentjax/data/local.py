"""What the tfds builders of data already on this machine share (the embedded digits and photo
crops, image folders, latent caches)."""

from __future__ import annotations

import logging


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
