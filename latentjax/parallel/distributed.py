"""Multi-process start-up: every process runs the same program (``jax.distributed``).

On Cloud TPU pods and SLURM clusters ``jax.distributed.initialize()`` finds the coordinator by
itself; elsewhere (several processes on one machine, or hand-launched nodes) pass the
coordinator address, the number of processes and this process's id.
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
