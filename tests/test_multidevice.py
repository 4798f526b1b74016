"""The same 5 train steps of both stages on 1 device, on 8 fake CPU devices (data x fsdp and
data x tensor meshes), and in 2 processes (jax.distributed on localhost, each feeding half of
every batch) give the same losses to 1e-5; FSDP shards parameters and optimiser state, tensor
parallelism splits the DiT's attention and MLP weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xla

SCRIPT = Path(__file__).parent / "scripts" / "step_on_mesh.py"


def _run(shape: dict, devices: int, script: Path = SCRIPT, *args: str) -> dict:
    """``script`` with the mesh ``shape`` (and ``args``) in a process with ``devices`` fake
    devices -> the JSON of its last line."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla.flags(devices)
    env["PYTHONPATH"] = str(script.parents[2])
    out = subprocess.run(
        [sys.executable, str(script), json.dumps(shape), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _compare(single: dict, other: dict, stages=("ae", "dit")) -> None:
    for stage in stages:
        assert len(single[stage]) == len(other[stage]) == 5
        for one, many in zip(single[stage], other[stage], strict=True):
            for key in one:
                tol = 1e-5 * max(1.0, abs(one[key]))
                assert abs(one[key] - many[key]) <= tol, (stage, key, one[key], many[key])


@pytest.fixture(scope="module")
def single():
    return _run({"data": 1, "fsdp": 1, "tensor": 1}, 1)


@pytest.mark.multidevice
def test_dit_steps_on_a_data_x_fsdp_x_tensor_mesh_match_one_device():
    """The DiT's steps on 8 devices (2 x 2 x 2), against one device: ``make test``'s check of
    sharded training; the two tests below (``make test-all``) take both stages, the
    autoencoder's GAN branch included, over each parallelism alone."""
    single = _run({"data": 1, "fsdp": 1, "tensor": 1, "stages": ["dit"]}, 1)
    multi = _run({"data": 2, "fsdp": 2, "tensor": 2, "stages": ["dit"]}, 8)
    assert "ae" not in multi and multi["devices"] == 8
    _compare(single, multi, stages=("dit",))
    r = multi["dit_sharding"]
    # qkv [32, 3*32]: its input width over fsdp, its heads over tensor; fc1 [32, 128] alike;
    # Adam's state as its parameter.
    assert r["qkv_shard"] == [16, 48] and r["qkv_adam_mu_shard"] == [16, 48]
    assert r["fc1_shard"] == [16, 64]
    assert r["sharding_constraints"] >= 6
    half = r["params_global"] / 4  # fsdp x tensor
    assert r["params_per_device"] <= 1.1 * half


@pytest.mark.slow  # with test_eight_devices_data_x_tensor_match_one, 8 minutes on an empty cache
@pytest.mark.multidevice
def test_eight_devices_data_x_fsdp_match_one(single):
    multi = _run({"data": 4, "fsdp": 2, "tensor": 1}, 8)
    assert multi["devices"] == 8 and single["devices"] == 1
    _compare(single, multi)
    # The GAN branch ran from the second autoencoder step on.
    assert single["ae"][1]["d_loss"] > 0 and single["ae"][0]["d_loss"] == 0
    # FSDP: parameters *and* optimiser state are split over fsdp=2, before and after the steps
    # (the rules table gives every parameter an fsdp-sharded dimension).
    for stage in ("ae", "dit"):
        r = multi[f"{stage}_sharding"]
        for key in ("params", "opt_state"):
            assert r[f"{key}_global"] == single[f"{stage}_sharding"][f"{key}_global"]
            # Replicated: Adam's step counts and the few layers whose channels fsdp does not
            # divide (the 1-channel output convs of the decoder and the PatchGAN).
            half = r[f"{key}_global"] / 2
            assert half <= r[f"{key}_per_device"] <= 1.03 * half, (stage, key, r)
        assert r["state_after_per_device"] == r["params_per_device"] + r["opt_state_per_device"]
    r = multi["dit_sharding"]
    assert r["qkv_shard"] == [16, 96] and r["qkv_adam_mu_shard"] == [16, 96]  # [32, 96] / fsdp


@pytest.mark.slow
@pytest.mark.multidevice
def test_eight_devices_data_x_tensor_match_one(single):
    multi = _run({"data": 2, "fsdp": 1, "tensor": 4}, 8)
    _compare(single, multi)
    r = multi["dit_sharding"]
    # Tensor parallelism: qkv [32, 3*32] is split over its heads, the MLP's fc1 [32, 128] over
    # its hidden width, and so is Adam's state for them.
    assert r["qkv_shard"] == [32, 24] and r["qkv_adam_mu_shard"] == [32, 24]
    assert r["fc1_shard"] == [32, 32]
    # Activation constraints (q, k, v, attention output, MLP hidden, residual stream).
    assert r["sharding_constraints"] >= 6
    assert single["dit_sharding"]["params_global"] == r["params_global"]


@pytest.mark.slow  # 6 minutes with an empty compilation cache: `make test-all`
@pytest.mark.multidevice
def test_demo_command_runs_unchanged_on_eight_devices(tmp_path, digits_data_dir):
    """`latentjax demo --quick` (both stages, sampling, the summary) on 8 fake devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla.flags(8)
    env["LATENTJAX_DATA_DIR"] = digits_data_dir

    def demo():
        return subprocess.run(
            [sys.executable, "-m", "latentjax", "demo", "--quick", "--workdir", str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            cwd=SCRIPT.parents[2],
        )

    out = demo()
    assert out.returncode == 0, out.stderr[-3000:]
    assert "8 cpu device(s)" in out.stdout
    assert "not expected to look like digits" in out.stdout  # what --quick's figures mean
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["grid"].endswith("samples.png") and summary["quick"] is True
    data = np.load(tmp_path / "samples.npz")
    assert data["images"].shape == (100, 16, 16, 1)
    assert sorted(set(data["labels"].tolist())) == list(range(10))
    # Again on the finished directory: nothing is trained, and the summary keeps the training
    # times of the run that did train.
    again = demo()
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((tmp_path / "summary.json").read_text())
    for key in ("ae_train_s", "dit_train_s"):
        assert resumed[key] == summary[key]


@pytest.mark.slow  # 2 processes compiling both stages without a cache: `make test-all`
@pytest.mark.multidevice
def test_two_processes_match_one(single, coordinator_address, tmp_path, wait_processes):
    """Two local processes, one CPU device each, coordinated over 127.0.0.1 (gloo collectives)."""
    env = dict(os.environ, PYTHONPATH=str(SCRIPT.parents[2]), JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = xla.flags()
    cmd = [sys.executable, str(SCRIPT), json.dumps({"data": -1}), coordinator_address, "2"]
    # Output to files, not pipes: a process blocked on a full pipe that nobody reads (the
    # other's, while the test waits for the first) would never reach JAX's shutdown barrier.
    files = [(tmp_path / f"process{i}.out", tmp_path / f"process{i}.err") for i in range(2)]
    procs = []
    for i, (out_file, err_file) in enumerate(files):
        with open(out_file, "wb") as out, open(err_file, "wb") as err:
            procs.append(subprocess.Popen([*cmd, str(i)], env=env, stdout=out, stderr=err))
    wait_processes(procs, timeout=600)
    outputs = [(o.read_text(errors="replace"), e.read_text(errors="replace")) for o, e in files]
    logs = "\n".join(
        f"--- process {i} ---\n{err[-12000:]}\n(stdout) {out[-300:]}"
        for i, (out, err) in enumerate(outputs)
    )
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"process {i} failed:\n{logs}"
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    for r in results:
        assert r["processes"] == 2 and r["devices"] == 2
        # Off in several CPU processes (latentjax.parallel.distributed): with the suite's warm
        # cache only process 0 loaded its programs, and gloo failed the first collective when
        # the other came more than 30 s later.
        assert r["compilation_cache"] is False
        _compare(single, r)
    assert results[0]["dit"] == results[1]["dit"]


ROWS_SCRIPT = Path(__file__).parent / "scripts" / "video_rows_on_mesh.py"


def _rows(shape: dict, devices: int, mode: str) -> dict:
    return _run(shape, devices, ROWS_SCRIPT, mode)


@pytest.mark.multidevice
def test_video_autoencoder_rows_split_over_tensor_match_one_device_in_less_memory():
    """The causal video autoencoder's encode + decode of 32 x 32 clips on 8 fake devices (data 2
    x tensor 4), its activations' rows split over ``tensor`` by the default rules' ``height``
    rule: the same reconstruction as on one device (XLA exchanges the rows at the borders of
    every convolution), in less than half the temporary memory per device of the same mesh
    with the rows replicated (the rule dropped)."""
    mesh = {"data": 2, "fsdp": 1, "tensor": 4}
    one = _rows({"data": 1, "fsdp": 1, "tensor": 1}, 1, "rows")
    rows, replicated = _rows(mesh, 8, "rows"), _rows(mesh, 8, "none")
    assert rows["devices"] == replicated["devices"] == 8
    for other in (rows, replicated):
        np.testing.assert_allclose(other["out"], one["out"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(other["sum"], one["sum"], rtol=1e-5)
    assert rows["rows_over_tensor"] > 0 and replicated["rows_over_tensor"] == 0
    assert rows["temp_bytes"] < 0.5 * replicated["temp_bytes"]
