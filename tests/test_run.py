"""A run directory has one owner, an identity, and nothing runs from it or the current directory
that the user did not name (``latentjax/run.py``, ``latentjax/config.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import xla

from latentjax import config as config_lib
from latentjax import run as run_lib
from latentjax.commands import main
from latentjax.errors import ConfigError, WorkdirError

TESTS = Path(__file__).parent
SCRIPT = TESTS / "scripts" / "toy_train.py"


def _toy(workdir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    env["XLA_FLAGS"] = xla.flags()
    log = open(workdir.parent / f"{workdir.name}.log", "ab")  # noqa: SIM115 - the process's
    cmd = [sys.executable, str(SCRIPT), "--workdir", str(workdir), *args]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_a_second_trainer_is_refused_and_a_dead_owners_lock_is_taken_over(
    tmp_path, capsys, wait_for_file
):
    run = tmp_path / "run"
    first = _toy(run, "--steps", "20", "--checkpoint-every", "5", "--hang-after-batches", "7")
    try:
        wait_for_file(run / "hung", first)
        before = _files(run)
        assert main(["train", "--config", "ae/digits.py", "--workdir", str(run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"is in use by process {first.pid}" in err[0], err
        assert _files(run) == before  # the directory as it was
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    # The owner is gone (kill -9 leaves its lock): the next trainer takes the run over.
    owner = json.loads((run / run_lib.LOCK_FILE).read_text())
    assert owner["pid"] == first.pid
    second = _toy(run, "--steps", "10", "--checkpoint-every", "5")
    assert second.wait(timeout=300) == 0, (run.parent / "run.log").read_text()[-3000:]
    assert not (run / run_lib.LOCK_FILE).exists()  # released at the end


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    (tmp_path / run_lib.LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(WorkdirError, match="in use by process 1 on elsewhere"):
        with run_lib.owned(tmp_path):
            pass
    # A damaged lock (a process killed while writing it cannot leave one: it is linked whole)
    # is taken over; a new directory nothing was written into is removed again.
    (tmp_path / run_lib.LOCK_FILE).write_text("{")
    with run_lib.owned(tmp_path):
        assert json.loads((tmp_path / run_lib.LOCK_FILE).read_text())["pid"] == os.getpid()
    with run_lib.owned(tmp_path / "new"):
        pass
    assert not (tmp_path / "new").exists()


def test_the_run_identity_is_written_once(tmp_path):
    first = run_lib.ensure_identity(tmp_path, "ae")
    assert run_lib.ensure_identity(tmp_path, "ae") == first
    assert json.loads((tmp_path / run_lib.RUN_FILE).read_text())["stage"] == "ae"


MARKER = "ran_the_local_file"
EVIL = f"open({MARKER!r}, 'w').write('x')\n\ndef get_config():\n    raise ValueError('no')\n"


def test_files_of_the_current_directory_never_stand_in_for_built_in_configs(
    tmp_path, monkeypatch, capsys
):
    # A downloaded folder that happens to hold files named like the built-in configs.
    for name in ("ae/digits.py", "dit/dit_xl2_imagenet256.py", "ae/kl_f8c4_imagenet256.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(EVIL)
    monkeypatch.chdir(tmp_path)
    # The defaults of `latentjax demo` and `latentjax convert` are built-in: never these files.
    assert config_lib.load_builtin("ae/digits.py").data.name == "latentjax_digits"
    from latentjax.train.converted import run_config

    dit_model = config_lib.base_config("dit").model
    assert run_config("dit", dit_model).stage == "dit"
    assert run_config("ae", config_lib.base_config("ae").model).stage == "ae"
    # A name that is both a file here and a built-in config must say which.
    assert main(["train", "--config", "ae/digits.py", "--workdir", "w"]) == 2
    assert "is both a file here and the name of a built-in config" in capsys.readouterr().err
    assert not (tmp_path / MARKER).exists() and not (tmp_path / "w").exists()
    # Named explicitly, the user's own file runs (and here it fails as it is written to).
    with pytest.raises(ConfigError, match="get_config"):
        config_lib.load_config("./ae/digits.py")
    assert (tmp_path / MARKER).exists()
