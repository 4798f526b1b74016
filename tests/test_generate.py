"""Batch sampling: one program for every step count, chunked shards that resume, the same
samples on 1 and 8 devices, and one-line errors from ``latentjax sample``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import xla

from latentjax.commands import main
from latentjax.config import load_config, to_json
from latentjax.errors import LatentjaxError
from latentjax.generate import SampleSpec, read_shards, spec_from_config, write_sample_shards
from latentjax.parallel import mesh as mesh_lib

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from sample_on_mesh import tiny_generator  # noqa: E402


@pytest.fixture(scope="module")
def generator():
    return tiny_generator(mesh_lib.make_mesh({"data": -1}))


def test_steps_and_guidance_are_runtime_arguments(generator):
    labels = np.arange(4, dtype=np.int32)
    outs = []
    for steps, cfg, interval in ((2, 2.0, (0.0, 1.0)), (3, 2.0, (0.0, 1.0)), (3, 4.0, (0.5, 1.0))):
        spec = SampleSpec("heun", steps, cfg, 0.0, interval)
        outs.append(generator.sample_chunk(labels, 0, 0, spec, 4))
    assert generator.program("heun", True)._cache_size() == 1  # compiled once for all three
    assert all(o.shape == (4, 8, 8, 1) and o.dtype == np.uint8 for o in outs)
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])


def test_chunked_sampling_resumes_without_redoing_chunks(generator, tmp_path):
    labels = np.arange(10, dtype=np.int32) % 10
    spec = SampleSpec("euler_maruyama", 2, 2.0)
    straight = tmp_path / "straight"
    write_sample_shards(generator, labels, straight, 3, spec, chunk=4, progress=False)
    want, want_labels = read_shards(straight)
    assert want.shape == (10, 8, 8, 1) and want_labels.tolist() == labels.tolist()
    index = json.loads((straight / "index.json").read_text())
    assert [s["count"] for s in index["shards"]] == [4, 4, 2]

    class Interrupted(Exception):
        pass

    # Interrupted after the first chunk.
    calls, interrupt = [], [True]
    real = generator.sample_chunk

    def flaky(part, start, *args):
        calls.append(start)
        if interrupt[0] and len(calls) == 2:
            raise Interrupted
        return real(part, start, *args)

    out = tmp_path / "resumed"
    generator.sample_chunk = flaky
    try:
        with pytest.raises(Interrupted):
            write_sample_shards(generator, labels, out, 3, spec, chunk=4, progress=False)
        assert [s["start"] for s in json.loads((out / "index.json").read_text())["shards"]] == [0]
        calls.clear()
        interrupt[0] = False
        write_sample_shards(generator, labels, out, 3, spec, chunk=4, progress=False)
        assert calls == [4, 8]  # chunk 0 was not redone
        # A damaged shard is detected and redone; the others are skipped.
        (out / "shard-00001.npz").write_bytes(b"not a zip")
        calls.clear()
        write_sample_shards(generator, labels, out, 3, spec, chunk=4, progress=False)
        assert calls == [4]
    finally:
        generator.sample_chunk = real
    got, _ = read_shards(out)
    np.testing.assert_array_equal(got, want)
    # Other settings in the same directory are refused, not mixed in.
    with pytest.raises(LatentjaxError, match="other settings .*seed"):
        write_sample_shards(generator, labels, out, 4, spec, chunk=4, progress=False)


@pytest.mark.multidevice
@pytest.mark.parametrize("kind", ["images", "video"])
def test_same_seed_same_samples_on_one_and_eight_devices(kind):
    def run(devices: int, shape: dict, chunk: int) -> dict:
        env = dict(os.environ, XLA_FLAGS=xla.flags(devices))
        env["PYTHONPATH"] = str(SCRIPTS.parents[1])
        script = [str(SCRIPTS / "sample_on_mesh.py"), json.dumps(shape), str(chunk)]
        out = subprocess.run(
            [sys.executable, *script, *(["video"] if kind == "video" else [])],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=SCRIPTS.parents[1],
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    one = run(1, {"data": -1}, 4)  # chunks of 4 on one device
    eight = run(8, {"data": 4, "fsdp": 2, "tensor": 1}, 8)  # chunks of 8 over 8 devices
    assert one["devices"] == 1 and eight["devices"] == 8
    a, b = np.array(one["images"]), np.array(eight["images"])
    assert a.size == 12 * 8 * 8 * (5 if kind == "video" else 1)
    # uint8 after rounding: float reductions in another order may move a value across .5.
    assert np.abs(a - b).max() <= 1 and np.mean(a == b) > 0.99


def _run_dir(tmp_path) -> Path:
    config = load_config("dit/digits.py", [])
    (tmp_path / "config.json").write_text(to_json(config))
    return tmp_path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sampler", "plms"], "unknown sampler 'plms'"),
        (["--steps", "0"], "--steps must be a positive integer"),
        (["--guidance-interval", "0.5"], "--guidance-interval must be LO,HI"),
        (["--eta", "2"], "eta must be in [0, 1]"),
        (["--time-shift", "0"], "time shift must be a number > 0"),
        (["--time-shift", "nan"], "time shift must be a number > 0"),
    ],
)
def test_bad_sampler_arguments_are_one_line(tmp_path, capsys, extra, message):
    workdir = _run_dir(tmp_path)
    before = sorted(p.name for p in workdir.iterdir())
    argv = ["sample", "--workdir", str(workdir), "--num", "4", "--out", str(tmp_path / "s.npz")]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("latentjax: error:") and message in err[0], err
    assert sorted(p.name for p in workdir.iterdir()) == before  # nothing written


def test_a_run_samples_with_the_shift_it_trained_with():
    config = load_config("dit/digits.py", ["diffusion.time_shift=3.0"])
    assert spec_from_config(config).time_shift == 3.0
    assert spec_from_config(config, time_shift=1.5).time_shift == 1.5
    assert spec_from_config(load_config("dit/digits.py", [])).time_shift == 1.0


def test_sample_needs_an_output(tmp_path, capsys):
    assert main(["sample", "--workdir", str(_run_dir(tmp_path)), "--num", "4"]) == 2
    assert "give --out FILE.npz, --shard-dir DIR" in capsys.readouterr().err


def test_spec_checks_its_interval():
    with pytest.raises(LatentjaxError, match="guidance interval"):
        SampleSpec("ddim", 4, 2.0, 0.0, (0.8, 0.2))


def test_shards_of_another_checkpoint_are_never_reused(generator, tmp_path):
    labels = np.arange(6, dtype=np.int32)
    spec = SampleSpec("euler", 2, 1.0)
    out = tmp_path / "s"
    first = write_sample_shards(generator, labels, out, 0, spec, chunk=4, progress=False)
    assert (first["reused"], first["made"]) == (0, 6)
    again = write_sample_shards(generator, labels, out, 0, spec, chunk=4, progress=False)
    assert (again["reused"], again["made"]) == (6, 0)  # the same checkpoint: reused, and said so
    real = dict(generator.checkpoint)
    generator.checkpoint = {**real, "step": real.get("step", 0) + 1, "weights": "other"}
    try:
        with pytest.raises(LatentjaxError, match="another checkpoint .*checkpoint"):
            write_sample_shards(generator, labels, out, 0, spec, chunk=4, progress=False)
        redone = write_sample_shards(
            generator, labels, out, 0, spec, chunk=4, progress=False, replace=True
        )
        assert (redone["reused"], redone["made"]) == (0, 6)
    finally:
        generator.checkpoint = real


def test_shards_in_a_bucket_resume_after_a_lost_shard(generator, gcs_bucket, tmp_path):
    # Sampling into gs:// (the GCS emulator): an interrupted run's lost shard is made again,
    # the others are reused, and the images are those a local directory gets.
    from latentjax.paths import as_path

    labels = np.arange(10, dtype=np.int32)
    spec = SampleSpec("euler", 2, 1.0)
    local = write_sample_shards(generator, labels, tmp_path / "s", 0, spec, chunk=4, progress=False)
    bucket = as_path(f"{gcs_bucket}/samples/resumed")
    first = write_sample_shards(generator, labels, bucket, 0, spec, chunk=4, progress=False)
    assert (first["reused"], first["made"]) == (0, 10) and len(local["shards"]) == 3
    (bucket / "shard-00001.npz").unlink()  # lost, as if the run had died before writing it
    again = write_sample_shards(generator, labels, bucket, 0, spec, chunk=4, progress=False)
    assert (again["reused"], again["made"]) == (6, 4)
    (images, got), (want, want_labels) = read_shards(bucket), read_shards(tmp_path / "s")
    np.testing.assert_array_equal(got, labels)
    np.testing.assert_array_equal(images, want)
    np.testing.assert_array_equal(want_labels, labels)


def test_non_finite_samples_are_an_error_not_black_images(generator):
    with pytest.raises(LatentjaxError, match="guidance scale must be a finite number"):
        SampleSpec("euler", 2, float("nan"))
    params = generator.ema_params
    generator.ema_params = jax.tree.map(lambda p: p * np.nan, params)  # a diverged model
    try:
        with pytest.raises(LatentjaxError, match="4 of 4 samples came out non-finite"):
            generator.sample_chunk(np.arange(4, dtype=np.int32), 0, 0, SampleSpec("euler", 2), 4)
    finally:
        generator.ema_params = params
