"""A run directory: the one place that knows its files.

Every directory latentjax writes and reads back is a run:

- a training run (``latentjax train``): ``config.json`` (the config it was started with, completed
  from its stage's base), ``metrics.jsonl`` (one JSON object per logged step), ``checkpoints/``
  (Orbax: state and data-iterator position per step) and, for stage 2, ``latent_stats.json``
  (the latent shift and scale measured on the training set);
- an inference checkpoint (``latentjax export``, and ``latentjax convert ae|dit``): the same
  ``config.json`` and ``latent_stats.json``, the parameters under ``params/`` and
  ``export.json`` naming the entries of the training state they hold.

:class:`Run` opens either kind with one-line errors for what a user can fix (no such directory,
no or unreadable ``config.json``, another stage's run), and hands out its completed config, its
latent statistics and its paths. Small files are written whole (:func:`write_atomic`): a reader,
another process of the same run included, sees the old file or the new one, never a part.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

from latentjax import config as config_lib
from latentjax.errors import WorkdirError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LATENT_STATS_FILE = "latent_stats.json"
EXPORT_FILE = "export.json"
CHECKPOINT_DIR = "checkpoints"
PARAMS_DIR = "params"  # an inference checkpoint's parameters (Orbax StandardSave)

STAGE_NAMES = {"ae": "a stage-1 (ae) run", "dit": "a stage-2 (dit) run"}


@dataclasses.dataclass(frozen=True)
class Run:
    """An existing run directory (training run or inference checkpoint) and its config."""

    path: Path
    config: ml_collections.ConfigDict

    @classmethod
    def open(cls, path: str | Path, stage: str | None = None) -> Run:
        """The run at ``path``; with ``stage``, it must be that stage's."""
        path = Path(path)
        file = path / CONFIG_FILE
        if not file.is_file():
            what = "no such directory" if not path.is_dir() else f"missing {CONFIG_FILE}"
            raise WorkdirError(f"no run at {path} ({what})")
        try:
            text = file.read_text()
        except OSError as e:
            raise WorkdirError(f"cannot read {file}: {e.strerror or e}") from e
        run = cls(path, config_lib.from_json(text, str(file)))
        if "stage" not in run.config:
            # Another project's config.json, e.g. a diffusers model directory's.
            cls_name = run.config.get("_class_name")
            what = f"a diffusers {cls_name} config" if cls_name else "not latentjax's"
            raise WorkdirError(f"{path} is not a latentjax run: its {file.name} is {what}")
        if stage is not None and run.stage != stage:
            raise WorkdirError(
                f"{path} holds a '{run.stage}' run; this needs {STAGE_NAMES.get(stage, stage)}"
            )
        return run

    @property
    def stage(self) -> str:
        return self.config.stage

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def params_dir(self) -> Path:
        return self.path / PARAMS_DIR

    @property
    def export_info(self) -> dict[str, Any] | None:
        """``export.json`` of an inference checkpoint (its ``keys``, ``step``, ``source``), or
        None for a training run."""
        return read_json(self.path / EXPORT_FILE) if (self.path / EXPORT_FILE).exists() else None

    @property
    def is_export(self) -> bool:
        return (self.path / EXPORT_FILE).exists()

    def latent_stats(self) -> dict[str, Any] | None:
        """The latent normalisation ``{"shift", "scale", ...}``: ``(z - shift) * scale``."""
        file = self.path / LATENT_STATS_FILE
        return read_json(file) if file.exists() else None

    def ae_run(self) -> Run:
        """The stage-1 run a stage-2 run's ``ae_workdir`` names."""
        if not self.config.ae_workdir:
            raise WorkdirError(
                f"{self.path} names no autoencoder (ae_workdir is empty); for a converted DiT, "
                "convert it again with --ae AE_DIR (from `latentjax convert ae`)"
            )
        return Run.open(self.config.ae_workdir, stage="ae")


def read_json(path: Path) -> Any:
    """A JSON file written by latentjax; unreadable or damaged is a one-line error."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise WorkdirError(f"cannot read {path}: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise WorkdirError(f"{path} is damaged (not valid JSON: {e})") from e


def write_atomic(path: Path, write: Callable[[Any], Any]) -> None:
    """Calls ``write`` on a binary file beside ``path`` and renames it to ``path``: a reader
    sees the old file or the new one, never a part of it."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented JSON, written whole (:func:`write_atomic`)."""
    text = json.dumps(value, indent=2) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))


def prepare(path: str | Path, config: ml_collections.ConfigDict, *, write: bool) -> Path:
    """Checks that ``path`` is new or holds a run of the same stage and model, and, with
    ``write`` (process 0 of a run), creates it and writes ``config.json``."""
    path = Path(path)
    saved = path / CONFIG_FILE
    if saved.exists():
        old = Run.open(path).config
        for key in ("stage", "model"):
            before, now = _plain(old.get(key)), _plain(config.get(key))
            if before != now:
                raise WorkdirError(
                    f"workdir {path} holds a different run ({_first_difference(before, now, key)}"
                    "); use a new --workdir or the config it was started with"
                )
    if write:
        path.mkdir(parents=True, exist_ok=True)
        text = config_lib.to_json(config)
        write_atomic(saved, lambda f: f.write(text.encode()))
    return path


def _plain(x: Any) -> Any:
    """A config node as plain Python (ConfigDict equality also compares lock state and types)."""
    return json.loads(config_lib.to_json(x)) if hasattr(x, "to_dict") else x


def _first_difference(a: Any, b: Any, path: str) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b or a[k] != b[k]:
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}")
    return f"{path}: saved {a!r}, now {b!r}"
