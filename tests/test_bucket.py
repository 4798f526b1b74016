"""Runs whose directory is a bucket (``gs://`` on the GCS emulator of ``conftest.gcs_bucket``):
Orbax/TensorStore checkpoints, the run's small files and the lock all go through the bucket.
The toy task of ``tests/scripts/toy_train.py`` in subprocesses: killed and resumed exactly, and
two processes of one run writing one checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xla

from latentjax.paths import as_path
from latentjax.train.checkpoint import Checkpointer

SCRIPT = Path(__file__).parent / "scripts" / "toy_train.py"
ROOT = Path(__file__).parent.parent


def _start(workdir: str, logs: Path, *args: str) -> subprocess.Popen:
    """The toy trainer on ``workdir`` (a gs:// URL); its output goes to a local log file."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env["XLA_FLAGS"] = xla.flags()
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{len(list(logs.glob('*.log')))}.log"
    with open(log, "wb") as f:
        cmd = [sys.executable, str(SCRIPT), "--workdir", workdir, *args]
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.log.read_text(errors="replace")
    assert proc.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted toy run on a local disk (20 steps, checkpoints at 10 and 20, the final
    parameters in ``straight.npz``): the bucket runs must end where it does."""
    root = tmp_path_factory.mktemp("straight")
    run = root / "straight"
    _finish(_start(str(run), root / "logs", "--steps", "20", "--out", f"{run}.npz"))
    return run


def _restore_w(directory, step: int) -> np.ndarray:
    """``params.w`` of the toy run's checkpoint ``step``, restored onto this process's device."""
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {
        "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=one),
        "params": {"w": jax.ShapeDtypeStruct((8,), jnp.float32, sharding=one)},
    }
    checkpointer = Checkpointer(directory)
    try:
        restored = checkpointer.restore(abstract, step=step)
    finally:
        checkpointer.close()
    assert int(restored["step"]) == step
    return np.asarray(restored["params"]["w"])


def test_a_bucket_run_killed_and_resumed_is_bit_identical(
    gcs_bucket, straight, tmp_path, wait_for_file
):
    run = as_path(f"{gcs_bucket}/toy/killed")
    proc = _start(str(run), tmp_path / "logs", "--steps", "20", "--hang-after-batches", "13")
    wait_for_file(run / "hung", proc)
    os.kill(proc.pid, signal.SIGKILL)  # after step 13; the checkpoint of step 10 is the last
    proc.wait(timeout=30)
    assert Checkpointer(run / "checkpoints").latest_step() == 10
    assert (run / "run.lock").exists()  # left by the killed process: stale, taken over below
    resumed = tmp_path / "resumed.npz"
    _finish(_start(str(run), tmp_path / "logs", "--steps", "20", "--out", str(resumed)))

    a, b = np.load(f"{straight}.npz"), np.load(resumed)
    assert int(a["step"]) == int(b["step"]) == 20
    np.testing.assert_array_equal(a["w"], b["w"])
    steps = [int(line.split(",")[0].split(":")[1]) for line in (run / "metrics.jsonl").open()]
    assert steps == list(range(1, 21))  # steps 11-13 of the killed run were logged once
    assert Checkpointer(run / "checkpoints").all_steps() == [10, 20]
    assert not (run / "run.lock").exists()


def test_a_preempted_bucket_run_saves_where_it_stopped_and_resumes_from_there(
    gcs_bucket, tmp_path, wait_for_file
):
    # SIGTERM (a preemption notice) on a run whose directory is in the bucket: the step it
    # stopped at is saved there and logged as the last line, and the next sitting starts after it.
    run = as_path(f"{gcs_bucket}/toy/preempted")
    args = ["--steps", "100000", "--checkpoint-every", "100000"]
    proc = _start(str(run), tmp_path / "logs", *args)
    wait_for_file(run / "metrics.jsonl", proc, timeout=120)
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc, timeout=90)
    assert "preempted; saved step" in out
    (stopped,) = Checkpointer(run / "checkpoints").all_steps()
    assert 0 < stopped < 100000
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == stopped
    assert not (run / "run.lock").exists()
    _finish(_start(str(run), tmp_path / "logs", "--steps", str(stopped + 2)))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, stopped + 3))  # the second sitting went on from the save
    assert Checkpointer(run / "checkpoints").all_steps()[-1] == stopped + 2


def test_two_processes_write_one_bucket_checkpoint(
    gcs_bucket, straight, tmp_path, coordinator_address, wait_processes
):
    # Two processes of one jax.distributed run, each holding half of the sharded parameters
    # (fsdp over both), save into one bucket directory; this process restores the whole state
    # from it and meets the same step of the run made by one process on a local disk.
    run = as_path(f"{gcs_bucket}/toy/two")
    args = ["--steps", "10", "--num-processes", "2", "--fsdp", "2"]
    args += ["--coordinator", coordinator_address]
    procs = [_start(str(run), tmp_path / "logs", *args, "--process-id", str(i)) for i in range(2)]
    wait_processes(procs, timeout=180)
    for p in procs:
        assert p.returncode == 0, p.log.read_text(errors="replace")
    assert Checkpointer(run / "checkpoints").all_steps() == [10]
    w, reference = _restore_w(run / "checkpoints", 10), _restore_w(straight / "checkpoints", 10)
    # The two processes sum their halves of each batch in another order than one process.
    np.testing.assert_allclose(w, reference, rtol=1e-6)


def test_checkpoints_in_a_bucket_are_pruned_kept_best_checked_and_moved_aside(gcs_bucket):
    """The checkpointer's own guarantees with its directory in the bucket, as test_checkpoint.py
    checks them on a disk: keep-last-N with keep-best, a damaged checkpoint refused in one line
    naming the earlier one, and a resume from an earlier step moving the later ones aside (a
    copy on GCS, where nothing renames)."""
    from test_checkpoint import _abstract, _data_files, _iterator, _state

    from latentjax.train.checkpoint import CheckpointError

    directory = as_path(f"{gcs_bucket}/checkpoints/pruned")
    ckpt = Checkpointer(directory, max_to_keep=1, keep_best=1, best_metric="loss")
    for step, loss in zip((1, 2, 3, 4), (3.0, 1.0, 4.0, 2.0), strict=True):
        ckpt.save(step, _state(step), _iterator(), metrics={"loss": loss})
    ckpt.wait()
    assert ckpt.all_steps() == [2, 4]  # the best (loss 1 at step 2) and the latest
    ckpt.close()
    assert sorted(p.name for p in directory.iterdir()) == ["2", "4"]

    for path in _data_files(directory / "4"):  # step 4's arrays, cut short
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    ckpt = Checkpointer(directory)
    with pytest.raises(CheckpointError, match=r"is damaged .*resume_step=2") as e:
        ckpt.restore(_abstract(_state(0)))
    assert "\n" not in str(e.value)
    assert ckpt.resume_step(2) == 2
    assert ckpt.all_steps() == [2]
    assert sorted(p.name for p in directory.iterdir()) == ["2", "discarded-4"]
    restored = ckpt.restore(_abstract(_state(0)))
    jax.tree.map(np.testing.assert_array_equal, restored, _state(2))
    ckpt.close()
