"""Device meshes and shardings: one code path from one CPU to a pod.

Everything runs under ``jax.jit`` with ``NamedSharding`` over a ``Mesh`` with axes
``('data', 'fsdp', 'tensor')``. Parameters carry logical axis names (see ``axes.py``); a rules
table maps them to mesh axes. The batch dimension is split over ``data`` and ``fsdp`` together,
as in FSDP/ZeRO-3 setups (MaxText, big_vision).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from latentjax.errors import ConfigError
from latentjax.parallel import axes

Rules = Sequence[tuple[str, Any]]


def mesh_shape(shape: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Resolves ``{'data': -1, 'fsdp': 2, 'tensor': 1}`` to sizes whose product is
    ``num_devices`` (-1: whatever is left)."""
    unknown = set(shape) - set(axes.MESH_AXES)
    if unknown:
        raise ConfigError(f"unknown mesh axes {sorted(unknown)}; known: {list(axes.MESH_AXES)}")
    sizes = [int(shape.get(name, 1)) for name in axes.MESH_AXES]
    free = [i for i, s in enumerate(sizes) if s == -1]
    if len(free) > 1:
        raise ConfigError(f"at most one mesh axis may be -1, got {dict(shape)}")
    fixed = math.prod(s for s in sizes if s != -1)
    if any(s < 1 and s != -1 for s in sizes) or num_devices % fixed:
        raise ConfigError(f"mesh {dict(shape)} does not fit {num_devices} devices")
    if free:
        sizes[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ConfigError(f"mesh {dict(shape)} uses {fixed} devices but {num_devices} are present")
    return tuple(sizes)


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a mesh over all (or the given) devices. Axis types are Auto: XLA propagates
    shardings inside jit, and we pin inputs/outputs with NamedShardings."""
    devices = list(devices) if devices is not None else jax.devices()
    sizes = mesh_shape(shape, len(devices))
    auto = (jax.sharding.AxisType.Auto,) * len(sizes)
    return jax.make_mesh(sizes, axes.MESH_AXES, axis_types=auto, devices=devices)


def check_rules(rules: Rules) -> None:
    for logical, physical in rules:
        if logical not in axes.LOGICAL_AXES:
            raise ConfigError(f"sharding rule for unknown logical axis {logical!r}")
        phys = physical if isinstance(physical, (tuple, list)) else (physical,)
        for p in phys:
            if p is not None and p not in axes.MESH_AXES:
                raise ConfigError(f"sharding rule {logical!r} -> unknown mesh axis {p!r}")


def _fit(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
    """Drops the sharding of any dimension the mesh axes don't divide (it is replicated instead),
    so that small layers (a 1-channel output conv, a 10-row label table) never fail to shard."""
    out = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=False):
        if entry is None:
            out.append(None)
            continue
        names = entry if isinstance(entry, tuple) else (entry,)
        size = math.prod(mesh.shape[n] for n in names)
        out.append(entry if dim % size == 0 else None)
    return P(*out)


def logical_shardings(boxed_abstract: Any, mesh: Mesh, rules: Rules) -> Any:
    """Mesh shardings for a pytree whose leaves may be ``nn.Partitioned`` boxes (from
    ``jax.eval_shape(init)``). Unboxed leaves are replicated. Returns a tree matching
    ``nn.unbox(boxed_abstract)``."""
    specs = nn.get_partition_spec(boxed_abstract)
    mesh_specs = nn.logical_to_mesh(specs, rules)
    shapes = nn.unbox(boxed_abstract)
    return jax.tree.map(
        lambda spec, leaf: NamedSharding(mesh, _fit(spec, leaf.shape, mesh)),
        mesh_specs,
        shapes,
        is_leaf=lambda x: isinstance(x, P),
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data-parallel axes."""
    return NamedSharding(mesh, P((axes.DATA, axes.FSDP)))


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape[axes.DATA] * mesh.shape[axes.FSDP]


def check_batch_size(batch_size: int, mesh: Mesh | Mapping[str, int], what: str) -> None:
    """A global batch must split evenly over the data-parallel devices (``data`` x ``fsdp``)
    of ``mesh`` (a Mesh, or resolved axis sizes); ``what`` names the key in the error."""
    shape = dict(mesh.shape) if isinstance(mesh, Mesh) else dict(mesh)
    dp = shape.get(axes.DATA, 1) * shape.get(axes.FSDP, 1)
    if batch_size <= 0 or batch_size % dp:
        raise ConfigError(
            f"{what}={batch_size} is not a positive multiple of the {dp} data-parallel devices "
            f"of the mesh {shape}"
        )


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles a global batch from each process's local slice (one path for 1 or N hosts)."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()
    }


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Makes the models' activation constraints (``nn.with_logical_constraint``) take effect:
    they are no-ops unless a mesh and a rules table are in context while a step is traced.
    Trace (first call, or ``.lower``) the jitted step inside this context."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(tuple(r) for r in rules)):
        yield
