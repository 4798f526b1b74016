"""Accelerator chips and named slices for ``latentjax plan``: how many JAX devices a slice has and
how much memory each device holds.

Memory per chip, as the vendors state it (GB is taken as 10^9 bytes, the smaller reading, so a
plan that "fits" does not lean on the binary reading of the figure):

- TPU v4: 32 GiB HBM2 per chip (https://cloud.google.com/tpu/docs/v4)
- TPU v5e: 16 GB HBM2 per chip (https://cloud.google.com/tpu/docs/v5e)
- TPU v5p: 95 GB HBM2e per chip (https://cloud.google.com/tpu/docs/v5p)
- TPU v6e (Trillium): 32 GB HBM per chip (https://cloud.google.com/tpu/docs/v6e)
- NVIDIA H100 SXM: 80 GB HBM3; H200 SXM: 141 GB HBM3e (NVIDIA's H100/H200 data sheets)

Peak dense bfloat16 FLOP/s per chip, the denominator of the model FLOP/s utilisation (MFU) the
training loop logs: v4 275 T, v5e 197 T, v5p 459 T, v6e 918 T (the Cloud TPU pages above);
H100 SXM and H200 SXM 989 T (the data sheets' figure without sparsity, which they print as
1,979 T "with sparsity"). A run in float32 can reach only a fraction of these.

Slice names follow Cloud TPU's ``--accelerator-type``: for v4 and v5p the number counts
TensorCores, two per chip (``v5p-64`` is 32 chips, 2x4x4, on 8 hosts; v5p docs' topology table);
for v5e (``v5litepod-N``) and v6e it counts chips. A JAX device is one chip (megacore), so
``v5p-64`` plans over 32 devices.
"""

from __future__ import annotations

import dataclasses
import re

from latentjax.errors import ConfigError

GB = 10**9
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    memory_bytes: int
    cores_per_chip: int  # TensorCores counted by the slice name (1 where it counts chips)
    devices_per_host: int
    peak_flops: float  # dense bfloat16 FLOP/s per chip (module docstring)
    # Substrings of ``jax.Device.device_kind`` that name this chip (lower case).
    device_kinds: tuple[str, ...] = ()


CHIPS: dict[str, Chip] = {
    "v4": Chip("TPU v4", 32 * GIB, 2, 4, 275e12, ("tpu v4",)),
    "v5e": Chip("TPU v5e", 16 * GB, 1, 8, 197e12, ("tpu v5 lite", "tpu v5e")),
    "v5p": Chip("TPU v5p", 95 * GB, 2, 4, 459e12, ("tpu v5p", "tpu v5")),
    "v6e": Chip("TPU v6e", 32 * GB, 1, 8, 918e12, ("tpu v6 lite", "tpu v6e")),
    # Only the SXM parts: an H100 PCIe or NVL has another peak and is not matched.
    "h100": Chip("NVIDIA H100", 80 * GB, 1, 8, 989e12, ("h100 80gb hbm3", "h100 sxm")),
    "h200": Chip("NVIDIA H200", 141 * GB, 1, 8, 989e12, ("h200",)),
}
# Cloud TPU spells v5e slices "v5litepod-N".
_ALIASES = {"v5litepod": "v5e"}


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str
    chip: Chip
    devices: int

    @property
    def hosts(self) -> int:
        return max(1, self.devices // self.chip.devices_per_host)


def parse_topology(name: str) -> Topology:
    """``"v5p-64"`` -> 32 TPU v5p devices; ``"h100-16"`` -> 16 H100 GPUs."""
    m = re.fullmatch(r"([a-z0-9]+)-(\d+)", name.strip().lower())
    kind = _ALIASES.get(m.group(1), m.group(1)) if m else None
    if kind not in CHIPS:
        raise ConfigError(
            f"unknown topology {name!r}; use <chip>-<count> with chip one of "
            f"{sorted(CHIPS) + sorted(_ALIASES)}, e.g. v5p-64, v5litepod-16, h100-8"
        )
    chip, count = CHIPS[kind], int(m.group(2))
    if count < chip.cores_per_chip or count % chip.cores_per_chip:
        raise ConfigError(
            f"topology {name!r}: {chip.name} slices count {chip.cores_per_chip} cores per chip"
        )
    return Topology(name, chip, count // chip.cores_per_chip)


def chip(name: str) -> Chip:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in CHIPS:
        raise ConfigError(f"unknown chip {name!r}; use one of {sorted(CHIPS)}")
    return CHIPS[key]


def chip_of_device(device_kind: str) -> Chip | None:
    """The chip a ``jax.Device.device_kind`` names (``"TPU v5 lite"`` -> v5e), or None for one
    the table does not hold (a CPU, another GPU): its peak FLOP/s is then unknown."""
    kind = device_kind.strip().lower()
    # The longest matching name wins: "tpu v5 lite" before "tpu v5".
    matches = [(len(k), c) for c in CHIPS.values() for k in c.device_kinds if k in kind]
    return max(matches, key=lambda m: m[0])[1] if matches else None
