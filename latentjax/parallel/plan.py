"""``latentjax plan``: will a config's train step fit a slice, before renting one?

The real train step of the config's stage (``latentjax/train/``) is lowered and compiled ahead of
time over N fake CPU devices (``--xla_force_host_platform_device_count``) on abstract inputs:
``jax.eval_shape`` of the state, ``ShapeDtypeStruct`` leaves carrying their ``NamedSharding``s,
``jit(step).lower(...).compile()``. No parameter is ever materialised. From the compiled
program it reports, per device: parameter, EMA and optimiser-state bytes (from the shardings),
XLA's argument/temporary sizes (``memory_analysis``), FLOPs per step (``cost_analysis``), and
whether that fits each chip of ``topologies.CHIPS``.

The numbers come from XLA:CPU: layouts, fusion and hence temporaries differ on TPU/GPU, so treat
"fits" as an estimate with the headroom shown. Parameter and optimiser bytes are exact.

A stage-2 (DiT) config is planned on abstract latents of the configured shape, so no trained
stage-1 run is needed: the batch's images are replaced by latents and the frozen encoder by the
identity (the encoder's forward pass is not in the plan).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from latentjax.errors import ConfigError, LatentjaxError
from latentjax.parallel import topologies

REEXEC_ENV = "LATENTJAX_PLAN_REEXEC"
_COUNT_FLAG = "--xla_force_host_platform_device_count"


# ----------------------------------------------------------------------------- fake devices


def ensure_fake_devices(n: int) -> None:
    """Makes sure JAX's CPU backend has at least ``n`` devices.

    The device count is fixed when the backend starts: if it has not started yet, setting
    XLA_FLAGS now is enough; if it has, with too few devices, the command re-executes itself
    with the flag set (once)."""
    import jax
    from jax._src import xla_bridge

    if not xla_bridge.backends_are_initialized():
        _set_count_flag(n)
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        jax.config.update("jax_platforms", os.environ["JAX_PLATFORMS"])
    if len(jax.devices("cpu")) >= n:
        return
    if os.environ.get(REEXEC_ENV):
        raise LatentjaxError(f"could not get {n} fake CPU devices (XLA_FLAGS not honoured)")
    _set_count_flag(n)
    os.environ[REEXEC_ENV] = "1"
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "latentjax", *sys.argv[1:]])


def _set_count_flag(n: int) -> None:
    flags = re.sub(rf"{_COUNT_FLAG}=\d+", "", os.environ.get("XLA_FLAGS", "")).split()
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"{_COUNT_FLAG}={n}"])


# ----------------------------------------------------------------------------- the plan


@dataclasses.dataclass
class Plan:
    """Per-device figures of one compiled train step (bytes unless named otherwise)."""

    config: str
    stage: str
    phase: str
    devices: int
    mesh: dict[str, int]
    batch_size: int
    num_params: int
    params: int
    ema: int
    opt_state: int
    other_state: int
    arguments: int
    outputs: int
    aliased: int
    temporaries: int
    generated_code: int
    flops: float
    compile_s: float
    # Bytes of all live device arrays once the step is compiled: only keys and scalars, since
    # nothing of the state is ever allocated (tests check this).
    live_bytes: int = 0

    @property
    def params_and_opt(self) -> int:
        return self.params + self.ema + self.opt_state

    @property
    def peak(self) -> int:
        """Live bytes at the step's peak: inputs, outputs not written in place, temporaries."""
        return self.arguments + self.outputs - self.aliased + self.temporaries

    def fits(self, chip: topologies.Chip) -> bool:
        return self.peak <= chip.memory_bytes

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["params_and_opt"] = self.params_and_opt
        out["peak"] = self.peak
        out["fits"] = {k: self.fits(c) for k, c in topologies.CHIPS.items()}
        return out


class _Posterior:
    """What the frozen encoder returns, for latents given directly: sampling is the identity."""

    def __init__(self, z):
        self.z = z

    def sample(self, rng):
        del rng
        return self.z


@dataclasses.dataclass(frozen=True)
class LatentsAsImages:
    """Stands in for the frozen stage-1 model when planning stage 2: the batch's "image" already
    holds latents of ``latent_shape``. ``config`` carries the fields ``DiTStage`` reads (image
    size, and a downsampling factor and channel count that give ``latent_shape``)."""

    config: Any

    @property
    def ae(self) -> LatentsAsImages:
        return self

    def encode(self, images):  # only named as ``method=``; ``apply`` below does the work
        return _Posterior(images)

    def apply(self, params, images, method=None):
        del params, method
        return _Posterior(images)


def latents_stand_in(image_size: int, latent_shape: tuple[int, int, int]) -> LatentsAsImages:
    import ml_collections

    h, w, c = latent_shape
    f = image_size // h
    if h != w or image_size % h or f & (f - 1):
        raise ConfigError(
            f"latent shape {latent_shape} does not come from {image_size}px images by a "
            "power-of-two downsampling"
        )
    ae = ml_collections.ConfigDict()
    ae.data = {"image_size": image_size}
    ae.model = {"ch_mult": (1,) * (int(math.log2(f)) + 1), "embed_dim": c, "z_channels": c}
    return LatentsAsImages(ae)


def latent_shape_for(config, ae_config: str | None, latent_shape: str | None):
    """The stage-2 latent shape: ``--latent-shape H,W,C``, or from a stage-1 config file
    (``--ae-config``, else ``ae_workdir/config.json`` when that run exists)."""
    from latentjax.config import from_json, load_config

    if latent_shape:
        try:
            h, w, c = (int(v) for v in latent_shape.split(","))
        except ValueError:
            raise ConfigError(f"--latent-shape {latent_shape!r}: use H,W,C, e.g. 32,32,4") from None
        return h, w, c
    if ae_config:
        ae = load_config(ae_config)
    elif (Path(config.ae_workdir) / "config.json").exists():
        ae = from_json((Path(config.ae_workdir) / "config.json").read_text())
    else:
        raise ConfigError(
            "planning a dit config needs the latent shape: pass --ae-config configs/ae/….py or "
            f"--latent-shape H,W,C (no stage-1 run at ae_workdir={config.ae_workdir!r})"
        )
    f = 2 ** (len(ae.model.ch_mult) - 1)
    size = ae.data.image_size
    return size // f, size // f, ae.model.embed_dim or ae.model.z_channels


def _build_task(config, mesh, latent_shape):
    """(task, batch ShapeDtypeStructs) for the config's stage, with nothing materialised."""
    import jax
    import jax.numpy as jnp

    from latentjax.parallel import mesh as mesh_lib
    from latentjax.train import autoencoder, dit, loop

    b = config.train.batch_size
    batch_sharding = mesh_lib.batch_sharding(mesh)
    label = jax.ShapeDtypeStruct((b,), jnp.int32, sharding=batch_sharding)
    if config.stage == "ae":
        task = autoencoder.make_task(config, mesh)
        s, c = config.data.image_size, config.model.in_channels
        image = jax.ShapeDtypeStruct((b, s, s, c), jnp.float32, sharding=batch_sharding)
        return task, {"image": image, "label": label}
    if config.stage != "dit":
        raise ConfigError(f"config.stage must be 'ae' or 'dit', got {config.stage!r}")
    stage = dit.DiTStage(config, latents_stand_in(config.data.image_size, latent_shape))
    repl = mesh_lib.replicated(mesh)
    scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=repl)
    frozen = {"ae": {}, "latent_shift": scalar, "latent_scale": scalar}
    task = loop.Task(
        name="dit",
        init_state=stage.init_state,
        train_steps={"diffusion": stage.train_step},
        frozen=frozen,
        frozen_shardings={"ae": {}, "latent_shift": repl, "latent_scale": repl},
    )
    image = jax.ShapeDtypeStruct((b, *stage.latent_shape), jnp.float32, sharding=batch_sharding)
    return task, {"image": image, "label": label}


def _shard_bytes(tree) -> int:
    import jax

    return sum(
        math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
        for leaf in jax.tree.leaves(tree)
    )


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def plan(
    config,
    mesh_shape: dict[str, int],
    devices: int,
    *,
    phase: str | None = None,
    latent_shape: tuple[int, int, int] | None = None,
    name: str = "",
) -> Plan:
    """Compiles one phase of the config's train step over the first ``devices`` CPU devices
    (the last phase by default: the adversarial one for stage 1, the larger program)."""
    import jax

    from latentjax.parallel import mesh as mesh_lib
    from latentjax.train import loop

    mesh_lib.check_rules(config.mesh.rules)
    rules = tuple(tuple(r) for r in config.mesh.rules)
    mesh = mesh_lib.make_mesh(mesh_shape, jax.devices("cpu")[:devices])
    dp = mesh_lib.data_parallel_size(mesh)
    if config.train.batch_size % dp:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} is not divisible by the {dp} "
            f"data-parallel devices of mesh {dict(mesh.shape)}"
        )
    task, batch = _build_task(config, mesh, latent_shape)
    phase = phase or list(task.train_steps)[-1]
    if phase not in task.train_steps:
        raise ConfigError(f"--phase {phase!r}; this stage has {list(task.train_steps)}")
    rng = jax.random.key(config.seed)
    abstract, shardings, _ = loop.build_state(task, mesh, rules, rng)
    step = loop.jit_steps(task, shardings, mesh)[phase]
    rng_abstract = jax.ShapeDtypeStruct(rng.shape, rng.dtype, sharding=mesh_lib.replicated(mesh))
    start = time.perf_counter()
    with mesh_lib.activation_rules(mesh, rules):
        compiled = step.lower(abstract, task.frozen, batch, rng_abstract).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    params = abstract["params"]
    known = {"params", "ema_params", "opt_state"}
    return Plan(
        config=name,
        stage=config.stage,
        phase=phase,
        devices=devices,
        mesh=dict(mesh.shape),
        batch_size=config.train.batch_size,
        num_params=sum(math.prod(x.shape) for x in jax.tree.leaves(params)),
        params=_shard_bytes(params),
        ema=_shard_bytes(abstract.get("ema_params", {})),
        opt_state=_shard_bytes(abstract["opt_state"]),
        other_state=_shard_bytes({k: v for k, v in abstract.items() if k not in known}),
        arguments=int(mem.argument_size_in_bytes),
        outputs=int(mem.output_size_in_bytes),
        aliased=int(mem.alias_size_in_bytes),
        temporaries=int(mem.temp_size_in_bytes),
        generated_code=int(mem.generated_code_size_in_bytes),
        flops=_flops(compiled),
        compile_s=compile_s,
        live_bytes=sum(a.nbytes for a in jax.live_arrays()),
    )


def fsdp_sweep(config, sizes: list[int], **kwargs) -> list[Plan]:
    """The same step with parameters and optimiser state sharded over 1, 2, 4, … devices
    (mesh data=1, fsdp=n, tensor=1)."""
    return [plan(config, {"data": 1, "fsdp": n, "tensor": 1}, n, **kwargs) for n in sizes]


# ----------------------------------------------------------------------------- printing


def _gib(n: float) -> str:
    return f"{n / 2**30:.3f}"


def format_plan(p: Plan, chip: topologies.Chip | None = None) -> str:
    mesh = " x ".join(f"{k}={v}" for k, v in p.mesh.items())
    lines = [
        f"plan: {p.config} (stage {p.stage}, step '{p.phase}') on {p.devices} devices, "
        f"mesh {mesh}, global batch {p.batch_size}",
        f"  parameters: {p.num_params:,} ({p.num_params * 4 / 2**30:.2f} GiB as float32)",
        "  per device (GiB):",
        f"    parameters          {_gib(p.params):>10}",
        f"    EMA parameters      {_gib(p.ema):>10}",
        f"    optimiser state     {_gib(p.opt_state):>10}",
        f"    arguments (XLA)     {_gib(p.arguments):>10}",
        f"    temporaries (XLA)   {_gib(p.temporaries):>10}",
        f"    peak (args + outputs - aliased + temps) {_gib(p.peak)}",
        f"  FLOPs per step: {p.flops:.3e} per device, {p.flops * p.devices:.3e} in all",
        f"  compiled in {p.compile_s:.1f} s (XLA:CPU; temporaries on TPU/GPU will differ)",
        "  fits (peak / chip memory):",
    ]
    chips = [chip] if chip is not None else list(topologies.CHIPS.values())
    for c in chips:
        verdict = "fits" if p.fits(c) else "DOES NOT FIT"
        lines.append(
            f"    {c.name:<12} {c.memory_bytes / 2**30:7.1f} GiB  "
            f"{100 * p.peak / c.memory_bytes:6.1f}%  {verdict}"
        )
    return "\n".join(lines)


def format_sweep(plans: list[Plan]) -> str:
    base = plans[0].params_and_opt * plans[0].devices
    lines = [
        "FSDP sweep: per-device parameter + EMA + optimiser bytes (ideal: 1/n of the total)",
        f"{'devices':>8} {'params+opt (MiB)':>17} {'x n / total':>12} {'temps (MiB)':>12}",
    ]
    for p in plans:
        ratio = p.params_and_opt * p.devices / base
        lines.append(
            f"{p.devices:>8} {p.params_and_opt / 2**20:>17.3f} {ratio:>12.3f} "
            f"{p.temporaries / 2**20:>12.3f}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plan",
        help="compile the train step over N fake devices and report memory, FLOPs and fit",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--config", required=True, help="config file, e.g. configs/dit/….py")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--devices", type=int, default=None, help="number of devices")
    where.add_argument("--topology", default=None, help="a named slice, e.g. v5p-64, h100-8")
    where.add_argument(
        "--sweep-fsdp", default=None, help="e.g. 1,2,4,8: FSDP over each count (mesh fsdp=n)"
    )
    p.add_argument("--phase", default=None, help="train-step phase (default: the last)")
    p.add_argument("--ae-config", default=None, help="dit: stage-1 config giving latent shape")
    p.add_argument("--latent-shape", default=None, help="dit: latent H,W,C (e.g. 32,32,4)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(run=run, config_overrides=True)


def _counts(raw: str) -> list[int]:
    try:
        counts = [int(v) for v in raw.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ConfigError(f"--sweep-fsdp {raw!r}: use device counts such as 1,2,4,8")
    return counts


def run(args: argparse.Namespace) -> None:
    from latentjax.config import load_config

    config = load_config(args.config, args.overrides)
    topology = topologies.parse_topology(args.topology) if args.topology else None
    sweep = _counts(args.sweep_fsdp) if args.sweep_fsdp else None
    if sweep:
        n = max(sweep)
    elif topology:
        n = topology.devices
    elif args.devices is not None:
        n = args.devices
    else:
        raise ConfigError("plan needs --devices N, --topology NAME or --sweep-fsdp 1,2,…")
    if n < 1:
        raise ConfigError(f"--devices {n}: need at least one device")
    latent = None
    if config.stage == "dit":
        latent = latent_shape_for(config, args.ae_config, args.latent_shape)
    ensure_fake_devices(n)
    kwargs = {"phase": args.phase, "latent_shape": latent, "name": args.config}
    if sweep:
        plans = fsdp_sweep(config, sweep, **kwargs)
        for p in plans:
            print(format_plan(p))
        print(format_sweep(plans))
    else:
        plans = [plan(config, dict(config.mesh.shape), n, **kwargs)]
        print(format_plan(plans[0], topology.chip if topology else None))
        if topology:
            print(f"  {topology.name}: {n} chips on {topology.hosts} hosts")
    if args.json:
        Path(args.json).write_text(json.dumps([p.to_json() for p in plans], indent=2))
