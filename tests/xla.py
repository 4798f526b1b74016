"""The XLA settings of the suite, shared by pytest's own process and the processes its tests
start.

The suite compiles hundreds of small programs and runs each a few times, so on a 2-core CPU its
time is nearly all compilation. XLA's backend optimisation level 0 (LLVM's -O0 for the CPU's
machine code; XLA's own HLO passes, fusion included, still run) compiles a tiny autoencoder's
initialisation about 4 times faster and its training step about 2 times faster, for slower
execution that the suite's few steps do not feel. Programs and numerics are the same HLO; the
default level stays everywhere outside the suite (benchmarks, the demo, every command)."""

SUITE = "--xla_backend_optimization_level=0"


def flags(devices: int | None = None) -> str:
    """``XLA_FLAGS`` for a process a test starts: the suite's settings, and ``devices`` fake CPU
    devices when given (a process started without it sees one)."""
    count = f" --xla_force_host_platform_device_count={devices}" if devices else ""
    return SUITE + count
