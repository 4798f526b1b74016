"""launch/local.sh prints the exact commands it would run."""

import subprocess
from pathlib import Path

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
