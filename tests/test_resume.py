"""Exact resume after ``kill -9``, preemption by SIGTERM, and a save killed midway: the toy task
of ``tests/scripts/toy_train.py`` in subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import xla

from latentjax.train.checkpoint import Checkpointer

SCRIPT = Path(__file__).parent / "scripts" / "toy_train.py"
ROOT = Path(__file__).parent.parent


def _start(workdir: Path, *args: str) -> subprocess.Popen:
    """Starts the toy trainer; its output goes to a file (``proc.log``), not a pipe, so a
    process is never blocked on a full pipe that nobody reads while the test waits for another."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env["XLA_FLAGS"] = xla.flags()
    cmd = [sys.executable, str(SCRIPT), "--workdir", str(workdir), *args]
    workdir.parent.mkdir(parents=True, exist_ok=True)
    log = workdir.parent / f"{workdir.name}.{len(list(workdir.parent.glob('*.log')))}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _output(proc: subprocess.Popen, timeout: float) -> str:
    """Waits for ``proc`` to exit and returns all it printed."""
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.log.read_text(errors="replace")


def _run(workdir: Path, *args: str) -> str:
    proc = _start(workdir, *args)
    out = _output(proc, timeout=120)
    assert proc.returncode == 0, out
    return out


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_kill9_then_resume_is_bit_identical(tmp_path, wait_for_file):
    _run(tmp_path / "straight", "--steps", "20", "--out", str(tmp_path / "straight.npz"))

    run = tmp_path / "killed"
    proc = _start(run, "--steps", "20", "--hang-after-batches", "13")
    wait_for_file(run / "hung", proc)
    _kill9(proc)  # after step 13; the checkpoint of step 10 is the last one
    assert Checkpointer(run / "checkpoints").latest_step() == 10
    _run(run, "--steps", "20", "--out", str(tmp_path / "resumed.npz"))

    a, b = np.load(tmp_path / "straight.npz"), np.load(tmp_path / "resumed.npz")
    assert int(a["step"]) == int(b["step"]) == 20
    np.testing.assert_array_equal(a["w"], b["w"])
    steps = [int(line.split(",")[0].split(":")[1]) for line in (run / "metrics.jsonl").open()]
    assert steps == list(range(1, 21))  # steps 11-13 of the killed run were logged once


def test_a_save_killed_midway_is_never_picked_up(tmp_path, wait_for_file):
    run = tmp_path / "run"
    proc = _start(run, "--steps", "30", "--hang-in-save-after", "10")
    wait_for_file(run / "hung", proc)  # step 20's files are written, its commit has not happened
    _kill9(proc)
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if "tmp" in p.name]
    assert leftovers and leftovers[0].startswith("20.")
    ckpt = Checkpointer(run / "checkpoints")
    assert ckpt.all_steps() == [10]
    ckpt.close()
    _run(run, "--steps", "30")  # resumes from 10; the leftover is cleaned up
    assert Checkpointer(run / "checkpoints").all_steps() == [10, 20, 30]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["10", "20", "30"]


def test_sigterm_saves_and_exits_cleanly(tmp_path, wait_for_file):
    run = tmp_path / "run"
    proc = _start(run, "--steps", "100000", "--checkpoint-every", "100000")
    wait_for_file(run / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    out = _output(proc, timeout=60)
    assert proc.returncode == 0, out
    assert "preempted; saved step" in out
    steps = Checkpointer(run / "checkpoints").all_steps()
    assert len(steps) == 1 and 0 < steps[0] < 100000
    last_logged = (run / "metrics.jsonl").read_text().splitlines()[-1]
    assert f'"step": {steps[0]},' in last_logged


def test_preemption_of_one_process_saves_all_at_one_step(
    tmp_path, coordinator_address, wait_processes, wait_for_file
):
    # Two processes of one jax.distributed run; the preemption notice (SIGTERM) reaches only
    # the second. JAX's preemption service picks a step at which both save and stop together.
    run = tmp_path / "run"
    args = "--steps 100000 --checkpoint-every 100000 --num-processes 2".split()
    args += ["--coordinator", coordinator_address]
    procs = [_start(run, *args, "--process-id", str(i)) for i in range(2)]
    try:
        wait_for_file(run / "metrics.jsonl", procs[0])
    except BaseException:
        wait_processes(procs, timeout=0)  # kills both
        raise
    procs[1].send_signal(signal.SIGTERM)
    wait_processes(procs, timeout=120)
    outs = [p.log.read_text(errors="replace") for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out
    said = [re.findall(r"preempted; saved step (\d+)", out) for out in outs]
    assert said[0] and said[0] == said[1], outs
    assert Checkpointer(run / "checkpoints").all_steps() == [int(said[0][0])]
