"""The same train steps on 1 device, on 8 fake CPU devices, and in 2 processes (jax.distributed
on localhost, each feeding half of every batch) give the same losses."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parent / "scripts" / "step_on_mesh.py"


def _run(shape: dict, devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = str(SCRIPT.parents[2])
    out = subprocess.run(
        [sys.executable, str(SCRIPT), json.dumps(shape)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _compare(single: dict, other: dict) -> None:
    for stage in ("ae", "dit"):
        for one, many in zip(single[stage], other[stage], strict=True):
            for key in one:
                tol = 1e-5 * max(1.0, abs(one[key]))
                assert abs(one[key] - many[key]) <= tol, (stage, key, one[key], many[key])


@pytest.fixture(scope="module")
def single():
    return _run({"data": 1, "fsdp": 1, "tensor": 1}, 1)


@pytest.mark.multidevice
@pytest.mark.parametrize("shape", [{"data": 4, "fsdp": 2, "tensor": 1}])
def test_eight_devices_match_one(single, shape):
    multi = _run(shape, 8)
    assert multi["devices"] == 8 and single["devices"] == 1
    _compare(single, multi)
    # The GAN branch ran in the second autoencoder step.
    assert single["ae"][1]["d_loss"] > 0 and single["ae"][0]["d_loss"] == 0


@pytest.mark.multidevice
def test_demo_command_runs_unchanged_on_eight_devices(tmp_path, digits_data_dir):
    """`latentjax demo --quick` (both stages, sampling, the summary) on 8 fake devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["LATENTJAX_DATA_DIR"] = digits_data_dir
    out = subprocess.run(
        [sys.executable, "-m", "latentjax", "demo", "--quick", "--workdir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=SCRIPT.parents[2],
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "8 cpu device(s)" in out.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["grid"].endswith("samples.png")
    data = np.load(tmp_path / "samples.npz")
    assert data["images"].shape == (100, 16, 16, 1)
    assert sorted(set(data["labels"].tolist())) == list(range(10))


@pytest.mark.multidevice
def test_two_processes_match_one(single):
    """Two local processes, one CPU device each, coordinated over 127.0.0.1 (gloo collectives)."""
    env = dict(os.environ, PYTHONPATH=str(SCRIPT.parents[2]), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    address = f"127.0.0.1:{random.randint(20000, 30000)}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), json.dumps({"data": -1}), address, "2", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    for r in results:
        assert r["processes"] == 2 and r["devices"] == 2
        _compare(single, r)
