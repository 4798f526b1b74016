"""Paths a user passes: a local path or a bucket (``gs://…``, ``s3://…`` where its fsspec extra
is installed), as one type, :class:`etils.epath.Path` (the path type of Orbax, tfds and Grain).

Every path that comes from a user (``--workdir``, ``--out``, ``--shard-dir``, ``ae_workdir``,
latent caches, weight files, FID statistics) is made here, by :func:`as_path`; nothing in the
package calls ``pathlib.Path`` on such a value (``tests/test_paths.py`` reads the package with
``ast`` to keep it so). ``gs://`` goes through fsspec's ``gcsfs`` when TensorFlow is absent (the
``gcs`` extra), and Orbax's arrays through TensorStore, which speaks GCS itself.

What differs on an object store, and how the callers handle it (:func:`is_local` tells them):

- there is no rename: a small file is written whole (one object upload is atomic: a reader sees
  the old object or the new one), where a local disk writes a temporary file and renames it;
- there are no hard links, hence no create-only lock file (:func:`latentjax.run.owned`);
- directories are implied by the objects under them: ``mkdir`` is a no-op, an empty one does not
  exist.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from etils import epath

# A URL-like path: ``gs://bucket/…``, ``s3://…``, ``memory://…`` (fsspec's protocols).
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")

# gcsfs keeps a bucket's listings for ever by default: a process would not see the checkpoints
# another process wrote (another host of a pod; Orbax's arrays go through TensorStore, not
# gcsfs) after it first listed the folder. Listings are rare here (one per checkpoint): fetch
# them fresh (``cache_timeout <= 0``: no cache), unless the user's fsspec config says otherwise.
try:
    import fsspec.config
except ImportError:  # no fsspec: local paths only (the gcs extra brings it)
    pass
else:
    fsspec.config.conf.setdefault("gs", {}).setdefault("cache_timeout", 0)

Path = epath.Path  # the one path type; annotate with ``latentjax.paths.Path``
PathLike = str | os.PathLike


def as_path(value: PathLike) -> epath.Path:
    """``value`` (a local path or a bucket URL) as the package's path type."""
    return epath.Path(value)


def is_local(path: PathLike) -> bool:
    """Whether ``path`` is on a local file system (not a bucket or other fsspec URL)."""
    return not _SCHEME.match(os.fspath(path))


def absolute(value: PathLike) -> epath.Path:
    """``value`` made absolute: a local path against the working directory, a bucket URL as it
    is (``epath.Path('gs://b/x').absolute()`` would prefix the working directory)."""
    path = as_path(value)
    return path.absolute() if is_local(path) else path


def files_under(path: PathLike) -> Iterator[epath.Path]:
    """Every entry under ``path`` that is not a directory, at any depth (``rglob("*")`` less the
    folders: epath's ``glob`` refuses ``**``, which on a bucket could mean thousands of
    requests)."""
    root = as_path(path)
    scheme = _SCHEME.match(os.fspath(root))
    for directory, _, names in root.walk():
        directory = os.fspath(directory)
        if scheme and not _SCHEME.match(directory):  # a bucket's walk drops the scheme
            directory = scheme.group(0) + directory
        for name in names:
            yield as_path(directory) / name


def is_regular_file(path: PathLike) -> bool:
    """Whether ``path`` is a regular file: on a local disk not a FIFO, socket or device (which
    ``epath.Path.is_file`` counts as files: it means "exists and is not a directory"); in a
    bucket, an object."""
    return os.path.isfile(path) if is_local(path) else as_path(path).is_file()


def resolved(value: PathLike) -> epath.Path:
    """``value`` made absolute with symbolic links resolved (a local path), or as it is (a
    bucket URL, which has neither)."""
    path = as_path(value)
    return path.resolve() if is_local(path) else path
