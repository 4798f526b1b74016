"""The launch scripts (local, TPU pod, SLURM GPU nodes) print the exact commands they would run
with --dry-run, and all of them are shellcheck-clean."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "launch" / "local.sh"


def _dry(*args: str) -> list[str]:
    out = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return out.stdout.strip().splitlines()


def test_single_process_on_fake_devices():
    (line,) = _dry("--fake-devices", "8", "--dry-run", "--", "demo", "--quick")
    assert "XLA_FLAGS=--xla_force_host_platform_device_count=8" in line
    assert line.endswith("demo --quick")


def test_processes_get_coordinator_and_ids():
    lines = _dry("--processes", "3", "--port", "23456", "--dry-run", "--", "train", "--x", "y")
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert line.endswith(
            f"train --x y --coordinator 127.0.0.1:23456 --num-processes 3 --process-id {i}"
        )


def test_usage_error():
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "usage" in out.stderr


def test_help_is_the_scripts_own():
    for script in ("local.sh", "tpu_pod.sh", "gpu_multinode.sh"):
        out = subprocess.run(
            ["bash", str(SCRIPT.parent / script), "--help"], capture_output=True, timeout=30
        )
        text = out.stdout.decode()
        assert out.returncode == 0 and text.startswith("usage:") and script in text, script
        assert "latentjax" not in text.split("--")[0]  # not the latentjax command's help


# --------------------------------------------------------------------------- all scripts

LAUNCH = SCRIPT.parent
ROOT = LAUNCH.parent


def test_every_launch_script_is_shellcheck_clean():
    scripts = sorted(LAUNCH.glob("*.sh"))
    assert {p.name for p in scripts} >= {"local.sh", "tpu_pod.sh", "gpu_multinode.sh"}
    shellcheck = Path(sys.executable).parent / "shellcheck"
    out = subprocess.run(
        [str(shellcheck), *map(str, scripts)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr


# --------------------------------------------------------------------------- TPU pod

TPU = LAUNCH / "tpu_pod.sh"
TPU_ARGS = ["--name", "lj", "--zone", "us-east5-a", "--accelerator-type", "v5p-64"]


def _tpu(*args: str) -> list[list[str]]:
    out = subprocess.run(
        ["bash", str(TPU), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return [shlex.split(ln) for ln in out.stdout.splitlines() if not ln.startswith("#")]


def test_tpu_pod_dry_run_creates_copies_runs_everywhere_and_deletes():
    cmds = _tpu(*TPU_ARGS, "--dry-run", "--", "train", "--config", "c.py", "--workdir", "a b")
    create, archive, scp, install, run, mkdir, fetch, delete = cmds
    assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]
    assert "--accelerator-type=v5p-64" in create and "--zone=us-east5-a" in create
    assert archive[:2] == ["git", "-C"] and archive[-1] == "HEAD"
    assert (
        scp[3:5] == ["tpu-vm", "scp"] and "--worker=all" in scp and scp[-3] == "lj:latentjax.tar.gz"
    )
    assert install[3:6] == ["tpu-vm", "ssh", "lj"] and "--worker=all" in install
    assert "pip install" in install[-1]
    assert '-e "./latentjax[gcs]"' in install[-1]  # gcsfs: gs:// run directories
    assert run[3:6] == ["tpu-vm", "ssh", "lj"] and "--worker=all" in run
    remote = run[-1].removeprefix("--command=")
    # The remote shell sees the user's arguments intact (quoted), plus --distributed, and each
    # worker tees into a log named by its host.
    assert "python3 -m latentjax train --config c.py --workdir a\\ b --distributed" in remote
    assert "tee ../latentjax-logs/worker-$(hostname).log" in remote
    assert fetch[3:5] == ["tpu-vm", "scp"] and "--worker=all" in fetch
    assert delete[3:6] == ["tpu-vm", "delete", "lj"] and "--quiet" in delete


def test_tpu_pod_queued_resource_and_keep():
    cmds = _tpu(*TPU_ARGS, "--queued", "--spot", "--dry-run", "--", "demo")
    create = cmds[0]
    assert create[3:6] == ["queued-resources", "create", "lj-qr"]
    assert "--node-id=lj" in create and "--runtime-version=tpu-ubuntu2204-base" in create
    assert "--spot" in create
    assert cmds[1][3:5] == ["queued-resources", "describe"]
    assert cmds[-1][3:6] == ["queued-resources", "delete", "lj-qr"] and "--force" in cmds[-1]
    kept = _tpu(*TPU_ARGS, "--keep", "--dry-run", "--", "demo")
    assert not any("delete" in c for c in kept)


def test_tpu_pod_mounts_a_data_bucket_with_gcsfuse_before_the_run():
    cmds = _tpu(*TPU_ARGS, "--gcsfuse", "gs://my-data:/mnt/data", "--dry-run", "--", "demo")
    install, mount, run = cmds[3], cmds[4], cmds[5]
    assert "pip install" in install[-1] and "python3 -m latentjax demo" in run[-1]
    assert mount[3:6] == ["tpu-vm", "ssh", "lj"] and "--worker=all" in mount
    remote = mount[-1].removeprefix("--command=")
    assert "apt-get install -y -q gcsfuse" in remote
    assert remote.endswith(
        "sudo mkdir -p /mnt/data && sudo chown $(id -u):$(id -g) /mnt/data"
        " && gcsfuse -o ro --implicit-dirs my-data /mnt/data"
    )
    assert not any("gcsfuse" in " ".join(c) for c in _tpu(*TPU_ARGS, "--dry-run", "--", "demo"))


@pytest.mark.parametrize("spec", ["my-data", "my-data:mnt", ":/mnt/data", "b/sub:/mnt"])
def test_tpu_pod_bad_gcsfuse_is_one_line(spec):
    out = subprocess.run(
        ["bash", str(TPU), *TPU_ARGS, "--gcsfuse", spec, "--dry-run", "--", "demo"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "--gcsfuse takes BUCKET:MOUNT" in out.stderr


def test_tpu_pod_usage_error():
    out = subprocess.run(
        ["bash", str(TPU), "--name", "x", "--", "demo"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2 and "usage" in out.stderr


# --------------------------------------------------------------------------- SLURM

GPU = LAUNCH / "gpu_multinode.sh"


def _slurm_env(tmp_path) -> dict:
    """A stand-in `scontrol` that expands the allocation's node list as SLURM's would."""
    fake = tmp_path / "bin"
    fake.mkdir()
    scontrol = fake / "scontrol"
    scontrol.write_text(
        "#!/bin/sh\n"
        '[ "$1 $2 $3" = "show hostnames gpu[07-09]" ] && printf "gpu07\\ngpu08\\ngpu09\\n"\n'
    )
    scontrol.chmod(0o755)
    env = dict(os.environ, SLURM_JOB_NODELIST="gpu[07-09]")
    env["PATH"] = f"{fake}:{env['PATH']}"
    return env


def test_gpu_multinode_one_process_per_gpu_coordinator_on_first_node(tmp_path):
    out = subprocess.run(
        ["bash", str(GPU), "--gpus-per-node", "4", "--port", "2222", "--dry-run", "--"]
        + ["train", "--config", "c.py"],
        env=_slurm_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    mkdir, srun = (shlex.split(ln) for ln in out.stdout.splitlines())
    assert mkdir == ["mkdir", "-p", "logs"]
    assert srun[0] == "srun" and "--ntasks=12" in srun and "--ntasks-per-node=4" in srun
    assert "--nodes=3" in srun and "--gpus-per-task=1" in srun
    assert "--output=logs/%j-%t.log" in srun
    assert srun[-3:-1] == ["bash", "-c"]
    # Run the task line as srun would for rank 5 (with `echo` in place of `exec`).
    task = srun[-1].replace("exec ", "echo ", 1)
    got = subprocess.run(
        ["bash", "-c", task],
        env=dict(os.environ, SLURM_PROCID="5"),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    assert got == [
        "python3", "-m", "latentjax", "train", "--config", "c.py",
        "--coordinator", "gpu07:2222", "--num-processes", "12", "--process-id", "5",
    ]  # fmt: skip


def test_gpu_multinode_outside_slurm_is_an_error():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    out = subprocess.run(
        ["bash", str(GPU), "--dry-run", "--", "demo"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 2 and "SLURM allocation" in out.stderr
