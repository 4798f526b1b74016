"""The XLA settings of the suite, shared by pytest's own process and the processes its tests
start.

The suite compiles hundreds of small programs and runs each a few times, so on a 2-core CPU its
time is nearly all compilation. Two settings of XLA's CPU code generation make that faster,
for slower execution that the suite's few steps do not feel:

- backend optimisation level 0 (LLVM's -O0 for the machine code; XLA's own HLO passes, fusion
  included, still run): a tiny autoencoder's initialisation compiles about 4 times faster (its
  many random initialisers are costly to optimise) and its training step about 2 times;
- XLA's older loop emitters in place of its newer fusion emitters: the step another 10-15%.

Measured on the 2-core machine: ``make test`` from an empty compilation cache took 1,928 s
before and 1,476 s with the first setting. The programs are the same HLO; only how it becomes
machine code differs. The defaults stay everywhere outside the suite (benchmarks, the demo,
every command)."""

SUITE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def flags(devices: int | None = None) -> str:
    """``XLA_FLAGS`` for a process a test starts: the suite's settings, and ``devices`` fake CPU
    devices when given (a process started without it sees one)."""
    count = f" --xla_force_host_platform_device_count={devices}" if devices else ""
    return SUITE + count
