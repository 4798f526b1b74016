"""Multi-process start-up: every process runs the same program (``jax.distributed``).

On Cloud TPU pods and SLURM clusters ``jax.distributed.initialize()`` finds the coordinator by
itself; elsewhere (several processes on one machine, or hand-launched nodes) pass the
coordinator address, the number of processes and this process's id.

Several processes on CPU (local runs, the tests) turn JAX's persistent compilation cache off;
see :func:`_keep_cpu_processes_in_step`.
"""

from __future__ import annotations

import os

import jax

from latentjax.errors import ConfigError


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto: bool = False,
) -> None:
    """Joins the process group. Nothing happens for a single process unless ``auto``."""
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise ConfigError("--coordinator, --num-processes and --process-id go together")
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"--process-id {process_id} is not in [0, {num_processes})")
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
    elif auto or os.environ.get("LATENTJAX_DISTRIBUTED") == "auto":
        jax.distributed.initialize()  # TPU pod / SLURM auto-detection
    else:
        return
    _keep_cpu_processes_in_step()


def _keep_cpu_processes_in_step() -> None:
    """Turns the persistent compilation cache off in a multi-process CPU run (before anything
    is compiled), so that every process compiles its programs and they reach their first
    collectives together.

    JAX (0.10) writes cache entries from process 0 only, and the cache keys of the other
    processes differ from process 0's (measured here: process 1 missed every entry on a second
    run). With a warm cache, process 0 loads its programs while the others compile theirs. On
    CPU the collectives are gloo's, which gives a peer 30 s (not configurable) to join the first
    collective of each device group; a process more than 30 s behind then fails both with
    "Gloo context initialization failed: ... GetKeyValue() timed out". On GPUs and TPUs the
    collectives are not gloo's and the cache stays on.
    """
    if jax.process_count() > 1 and jax.default_backend() == "cpu":
        jax.config.update("jax_enable_compilation_cache", False)


def describe_devices() -> str:
    """The devices and processes JAX sees (and XLA_FLAGS when set): the start line of a run."""
    d = jax.devices()
    flags = os.environ.get("XLA_FLAGS")
    return (
        f"{len(d)} {d[0].platform} device(s) over {jax.process_count()} process(es)"
        f"{f' (XLA_FLAGS={flags})' if flags else ''}"
    )
