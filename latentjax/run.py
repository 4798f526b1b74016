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

import contextlib
import dataclasses
import datetime
import io
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import ml_collections

from latentjax import config as config_lib
from latentjax import paths
from latentjax.errors import WorkdirError
from latentjax.paths import Path, as_path

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"  # the run's identity: {"id", "stage", "created"}, written once
LOCK_FILE = "run.lock"  # held by the process that trains into the run directory
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"  # event files and profiler traces (latentjax.train.watch)
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
        path = as_path(path)
        file = path / CONFIG_FILE
        if not file.is_file():
            what = "no such directory" if not path.is_dir() else f"missing {CONFIG_FILE}"
            raise WorkdirError(
                f"no run at {path} ({what}); `latentjax train --config CONFIG --workdir DIR` "
                "writes one, `latentjax convert` turns weights from elsewhere into one"
            )
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
            hint = ""
            if stage == "dit" and run.stage == "ae":
                hint = (
                    f" (train one on it: latentjax train --config dit/digits.py --workdir DIR "
                    f"--config.ae_workdir={path})"
                )
            elif stage == "ae" and run.stage == "dit" and run.config.ae_workdir:
                hint = f" (its stage-1 run is {run.config.ae_workdir})"
            raise WorkdirError(
                f"{path} holds a '{run.stage}' run; this needs {STAGE_NAMES.get(stage, stage)}"
                + hint
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

    @property
    def id(self) -> str | None:
        """The run's identity (``run.json``), None for runs written before it existed."""
        file = self.path / RUN_FILE
        return read_json(file)["id"] if file.exists() else None

    @property
    def weights_step(self) -> int | None:
        """The step of the weights this run's readers load: its export's, or its latest
        checkpoint's; None when it has none."""
        if self.export_info is not None:
            return self.export_info.get("step")
        import orbax.checkpoint as ocp

        folder = self.checkpoint_dir
        return max(ocp.utils.checkpoint_steps(folder), default=None) if folder.exists() else None

    def ae_run(self) -> Run:
        """The stage-1 run a stage-2 run's ``ae_workdir`` names, checked to be the one it was
        trained on (``ae_run_id``)."""
        if not self.config.ae_workdir:
            raise WorkdirError(
                f"{self.path} names no autoencoder (ae_workdir is empty); for a converted DiT, "
                "convert it again with --ae AE_DIR (from `latentjax convert ae`)"
            )
        ae = Run.open(self.config.ae_workdir, stage="ae")
        check_ae_run(self.config, ae)
        return ae


def is_run(path: str | Path) -> bool:
    """Whether ``path`` holds a latentjax run (its config.json names a stage), not another
    project's model directory."""
    try:
        return "stage" in json.loads((as_path(path) / CONFIG_FILE).read_text())
    except (OSError, ValueError, TypeError):
        return False


def check_ae_run(config, ae: Run) -> None:
    """A stage-2 ``config`` that recorded its stage-1 run's id and weights' step must meet that
    run again, at that step: a stage-1 run trained on since is another autoencoder, whose
    decoder would turn this run's latents into something else without a word."""
    want, got = config.ae_run_id, ae.id
    if want and got and want != got:
        raise WorkdirError(
            f"ae_workdir={str(ae.path)!r} holds another stage-1 run (id {got}) than the one this "
            f"stage-2 run was trained on (id {want}); point ae_workdir at that run"
        )
    want_step = config.ae_step  # -1: not recorded (completed from dit/base.py)
    if want_step >= 0:
        got_step = ae.weights_step
        if got_step != want_step:
            raise WorkdirError(
                f"ae_workdir={str(ae.path)!r} holds its stage-1 run at step {got_step}, but this "
                f"stage-2 run was trained on it at step {want_step}: its latents belong to those "
                f"weights; export them (latentjax export --step {want_step}, while that run keeps "
                "the step) and name that directory as ae_workdir, or train stage 2 anew"
            )


def ensure_identity(path: Path, stage: str) -> str:
    """The id of the run at ``path``, written to ``run.json`` the first time."""
    file = as_path(path) / RUN_FILE
    if file.exists():
        return read_json(file)["id"]
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    identity = {"id": uuid.uuid4().hex, "stage": stage, "created": created}
    write_json(file, identity)
    return identity["id"]


@contextlib.contextmanager
def owned(path: str | Path, write: bool = True) -> Iterator[None]:
    """Holds ``path``'s lock while a process trains into it (process 0 of a run; ``write``
    False: the others, which take no lock). A second process finds the lock and stops with one
    line naming its owner; a lock whose owner is gone (the same host, no such process) is stale
    and taken over. The lock is released when the block ends, however it ends; a directory this
    made and nothing was written into is removed again.

    On a local disk the lock is created with its content at once or not at all (a hard link). A
    bucket has no links: there the lock is checked, then written whole, so two processes that
    start in the same instant could both take it; and a lock left by a host that is gone (a
    preempted pod) cannot be judged stale from another host: remove it (``gcloud storage rm``)."""
    path = as_path(path)
    if path.exists() and not path.is_dir():
        raise WorkdirError(f"workdir {path} is a file, not a directory")
    if not write:
        yield
        return
    lock = path / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid())}
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    if paths.is_local(path):
        _lock_local(path, lock, me)
    else:
        _lock_bucket(path, lock, me)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            if json.loads(lock.read_text()).get("pid") == me["pid"]:
                lock.unlink()
        if created and not any(paths.files_under(path)):
            with contextlib.suppress(OSError):
                path.rmtree()


def _in_use(path: Path, lock: Path, owner: dict) -> WorkdirError:
    return WorkdirError(
        f"workdir {path} is in use by process {owner['pid']} on {owner['host']} (its lock "
        f"{lock}); wait for it to finish, or remove the lock if that process is gone"
    )


def _lock_local(path: Path, lock: Path, me: dict) -> None:
    mine = lock.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
    mine.write_text(json.dumps(me))
    try:
        for _ in range(2):
            try:
                os.link(mine, lock)  # created with its content at once, or not at all
                break
            except FileExistsError:
                owner = _lock_owner(lock)
                if owner is not None and not _stale(owner):
                    raise _in_use(path, lock, owner) from None
                # Stale: moved aside, and put back if what was moved is not the stale lock
                # judged above (another process took the run over in between).
                aside = lock.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
                with contextlib.suppress(FileNotFoundError):
                    os.replace(lock, aside)
                    if _lock_owner(aside) != owner:
                        os.replace(aside, lock)
                    else:
                        os.unlink(aside)
        else:
            raise WorkdirError(f"could not take the lock {lock} of workdir {path}")
    finally:
        mine.unlink()


def _lock_bucket(path: Path, lock: Path, me: dict) -> None:
    if lock.exists():
        owner = _lock_owner(lock)
        if owner is not None and not _stale(owner):
            raise _in_use(path, lock, owner)
    lock.write_text(json.dumps(me))  # one object, written whole
    if _lock_owner(lock) != me:  # another process wrote it in between
        raise _in_use(path, lock, _lock_owner(lock) or {"pid": "?", "host": "?"})


def _lock_owner(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # damaged: stale


def _stale(owner: dict) -> bool:
    """Whether a lock's owner is gone: only knowable on its own host (a process with that id
    and start time no longer runs)."""
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return owner.get("start") is not None and owner.get("start") != _process_start(pid)


def _process_start(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks after boot; Linux), to tell a reused
    process id from the lock's owner."""
    try:
        with open(f"/proc/{pid}/stat") as f:  # a local system file, not a user's path
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def read_json(path: Path) -> Any:
    """A JSON file written by latentjax; unreadable or damaged is a one-line error."""
    try:
        return json.loads(as_path(path).read_text())
    except OSError as e:
        raise WorkdirError(f"cannot read {path}: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise WorkdirError(f"{path} is damaged (not valid JSON: {e})") from e


def write_atomic(path: str | Path, write: Callable[[Any], Any]) -> None:
    """Calls ``write`` on a binary file and makes it ``path`` whole: a reader sees the old file
    or the new one, never a part of it. On a local disk the file is written beside ``path`` and
    renamed; on a bucket, where a rename is a copy, it is uploaded as one object (an upload is
    atomic: the object changes only when it completes)."""
    path = as_path(path)
    if not paths.is_local(path):
        buffer = io.BytesIO()
        write(buffer)
        path.write_bytes(buffer.getvalue())
        return
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


def check_workdir(path: str | Path, config: ml_collections.ConfigDict) -> None:
    """``path`` must be new, or hold a run of the same stage and model (to resume it)."""
    path = as_path(path)
    if path.exists() and not path.is_dir():
        raise WorkdirError(f"workdir {path} is a file, not a directory")
    if not (path / CONFIG_FILE).exists():
        return
    old = Run.open(path).config
    for key in ("stage", "model"):
        before, now = _plain(old.get(key)), _plain(config.get(key))
        if before != now:
            raise WorkdirError(
                f"workdir {path} holds a different run ({_first_difference(before, now, key)}); "
                "use a new --workdir or the config it was started with"
            )


def write_config(path: str | Path, config: ml_collections.ConfigDict) -> None:
    """Writes ``config.json`` whole (and ``run.json`` the first time): done once a run really
    starts, so a start that is refused or fails leaves the directory as it was."""
    path = as_path(path)
    path.mkdir(parents=True, exist_ok=True)
    text = config_lib.to_json(config)
    write_atomic(path / CONFIG_FILE, lambda f: f.write(text.encode()))
    ensure_identity(path, config.stage)


def _plain(x: Any) -> Any:
    """A config node as plain Python (ConfigDict equality also compares lock state and types)."""
    return json.loads(config_lib.to_json(x)) if hasattr(x, "to_dict") else x


def _first_difference(a: Any, b: Any, path: str) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b or a[k] != b[k]:
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}")
    return f"{path}: saved {a!r}, now {b!r}"
