"""A checkpoint written on one mesh restores onto another: 8 devices with fsdp=4 -> 8 devices
with fsdp=2 -> 1 device (subprocesses with fake CPU devices), on a local disk and in a bucket."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xla

SCRIPT = Path(__file__).parent / "scripts" / "toy_train.py"
ROOT = Path(__file__).parent.parent


def _run(workdir, out: Path, devices: int, fsdp: int, steps: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env["XLA_FLAGS"] = xla.flags(devices if devices > 1 else None)
    cmd = [sys.executable, str(SCRIPT), "--workdir", str(workdir), "--steps", str(steps)]
    cmd += ["--checkpoint-every", "2", "--fsdp", str(fsdp), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_restore_onto_fewer_shards_and_one_device(tmp_path, where, request):
    # "bucket": the run directory in gs:// (the GCS emulator of conftest's gcs_bucket), which
    # the subprocesses reach through the emulator settings they inherit.
    if where == "bucket":
        run = f"{request.getfixturevalue('gcs_bucket')}/reshard/run"
    else:
        run = tmp_path / "run"
    out = _run(run, tmp_path / "fsdp4.npz", devices=8, fsdp=4, steps=4)
    assert "w: 4 pieces on 8 devices" in out
    saved = np.load(tmp_path / "fsdp4.npz")

    # Nothing left to train: the loop returns the state restored onto the new mesh.
    out = _run(run, tmp_path / "fsdp2.npz", devices=8, fsdp=2, steps=4)
    assert "w: 2 pieces on 8 devices" in out
    out = _run(run, tmp_path / "one.npz", devices=1, fsdp=1, steps=4)
    assert "w: 1 pieces on 1 devices" in out
    for name in ("fsdp2", "one"):
        restored = np.load(tmp_path / f"{name}.npz")
        assert int(restored["step"]) == 4
        np.testing.assert_array_equal(restored["w"], saved["w"])
