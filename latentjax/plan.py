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

This is the library; ``latentjax/commands/plan.py`` is the command (it also provides the fake
devices). A stage-2 (DiT) config is planned on abstract latents of the configured shape, so no
trained stage-1 run is needed: the batch's images are replaced by latents and the frozen encoder
by the identity (the encoder's forward pass is not in the plan).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp

from latentjax.config import load_config
from latentjax.errors import ConfigError
from latentjax.factory import build_autoencoder, downsample_factor, is_video, latent_shape
from latentjax.parallel import mesh as mesh_lib
from latentjax.parallel import topologies
from latentjax.paths import as_path
from latentjax.run import CONFIG_FILE, Run
from latentjax.train import autoencoder, dit
from latentjax.train.state import Task, build_state, jit_steps
from latentjax.train.watch import compiled_flops, loop_trip_counts, network_flops

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
    example: tuple[int, ...]  # one example's shape: (H, W, C), (T, H, W, C) or a latent's
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
    # Trip counts of the step's loops that repeat a network's work (``loop_trip_counts``; 0:
    # unknown). Any makes ``flops`` a lower bound: XLA's cost analysis counts a body once.
    loops: list[int] = dataclasses.field(default_factory=list)
    # The step's matrix products and convolutions counted from its program, each loop's body
    # times its trips (``watch.network_flops``), per device; None where a loop's trips are
    # unknown. Computed for a step with such loops, where ``flops`` falls short.
    network_flops: float | None = None
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
        out["flops_is_lower_bound"] = bool(self.loops)
        return out


class _Posterior:
    """What the frozen encoder returns, for latents given directly: sampling is the identity."""

    def __init__(self, z):
        self.z = z

    def sample(self, rng):
        del rng
        return self.z


class LatentsAsImages:
    """Stands in for the frozen stage-1 network when planning stage 2: the batch's "image"
    already holds latents."""

    def encode(self, images):  # only named as ``method=``; ``apply`` below does the work
        return _Posterior(images)

    def apply(self, params, images, method=None):
        del params, method
        return _Posterior(images)


def stage2_latent_shape(
    config, ae_config: str | None, latent: str | None, frames=None, size=None
) -> tuple[int, ...]:
    """The stage-2 latent shape: ``--latent-shape H,W,C`` (T,H,W,C for clips), or from a
    stage-1 config file (``--ae-config``, else the run at ``ae_workdir`` when it exists); a
    video stage 1 takes ``frames`` and ``size`` as :func:`pixel_shape` does, and its latents are
    planned for the video DiT."""
    if latent:
        if frames is not None or size is not None:
            raise ConfigError(
                "--frames and --size go with the --ae-config of a video stage 1, not with "
                "--latent-shape (give T,H,W,C there)"
            )
        try:
            shape = tuple(int(v) for v in latent.split(","))
        except ValueError:
            shape = ()
        if len(shape) not in (3, 4):
            raise ConfigError(f"--latent-shape {latent!r}: use H,W,C or T,H,W,C, e.g. 32,32,4")
        return shape
    if ae_config:
        ae = load_config(ae_config)
    elif config.ae_workdir and (as_path(config.ae_workdir) / CONFIG_FILE).exists():
        ae = Run.open(config.ae_workdir, stage="ae").config
    else:
        ae = None
    if ae is not None:
        pixels = pixel_shape(ae, frames, size)
        f = downsample_factor(ae.model)
        h, w, c = pixels[-3] // f, pixels[-2] // f, latent_shape(ae)[-1]
        if len(pixels) == 4:
            return build_autoencoder(ae.model).latent_frames(pixels[0]), h, w, c
        return h, w, c
    raise ConfigError(
        "planning a dit config needs the latent shape: pass --ae-config ae/….py or "
        f"--latent-shape H,W,C (no stage-1 run at ae_workdir={config.ae_workdir!r})"
    )


def pixel_shape(config, frames: int | None = None, size: str | None = None) -> tuple[int, ...]:
    """One training example of a stage-1 config: (H, W, C), or (T, H, W, C) for a video
    autoencoder. ``size`` "H,W" replaces the config's square ``data.image_size`` (video
    models are planned at their real frame sizes, e.g. 480,832); ``frames`` is a video's T,
    which a video config needs (1 + 4k for Wan's x4 in time). Checked in one line each:
    divisibility by the autoencoder's factors, frames only for a video config."""
    if size is None:
        h = w = config.data.image_size
    else:
        try:
            h, w = (int(v) for v in size.split(","))
        except ValueError:
            raise ConfigError(f"--size {size!r}: use H,W, e.g. 480,832") from None
        if h < 1 or w < 1:
            raise ConfigError(f"--size {size!r}: use positive sizes")
    f = downsample_factor(config.model)
    if h % f or w % f:
        raise ConfigError(f"--size {h},{w} is not divisible by the autoencoder's f={f}")
    c = config.model.in_channels
    if not is_video(config.model):
        if frames is not None:
            raise ConfigError("--frames is for a video config (model.family='video')")
        return h, w, c
    if frames is None:
        raise ConfigError("planning a video config needs --frames T (e.g. 81 for Wan at 480p)")
    try:
        build_autoencoder(config.model).latent_frames(frames)
    except ValueError as e:
        raise ConfigError(f"--frames {frames}: {e}") from None
    return frames, h, w, c


def _build_task(config, mesh, latent, pixels=None):
    """(task, batch ShapeDtypeStructs) for the config's stage, with nothing materialised.
    ``pixels``: a stage-1 example's shape (``pixel_shape``; default: the config's own)."""
    b = config.train.batch_size
    batch_sharding = mesh_lib.batch_sharding(mesh)
    label = jax.ShapeDtypeStruct((b,), jnp.int32, sharding=batch_sharding)
    if config.stage == "ae":
        task = autoencoder.make_task(config, mesh)
        pixels = pixels or pixel_shape(config)
        key = "video" if len(pixels) == 4 else "image"
        x = jax.ShapeDtypeStruct((b, *pixels), jnp.float32, sharding=batch_sharding)
        return task, {key: x, "label": label}
    if config.stage != "dit":
        raise ConfigError(f"config.stage must be 'ae' or 'dit', got {config.stage!r}")
    stage = dit.DiTStage(config, LatentsAsImages(), latent)
    repl = mesh_lib.replicated(mesh)
    scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=repl)
    task = Task(
        name="dit",
        init_state=stage.init_state,
        train_steps={"diffusion": stage.train_step},
        frozen={"ae": {}, "latent_shift": scalar, "latent_scale": scalar},
        frozen_shardings={"ae": {}, "latent_shift": repl, "latent_scale": repl},
    )
    z = jax.ShapeDtypeStruct((b, *stage.latent_shape), jnp.float32, sharding=batch_sharding)
    return task, {stage.key: z, "label": label}


def _shard_bytes(tree) -> int:
    return sum(
        math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
        for leaf in jax.tree.leaves(tree)
    )


def plan(
    config,
    mesh_shape: dict[str, int],
    devices: int,
    *,
    phase: str | None = None,
    latent_shape: tuple[int, int, int] | None = None,
    pixels: tuple[int, ...] | None = None,
    name: str = "",
) -> Plan:
    """Compiles one phase of the config's train step over the first ``devices`` CPU devices
    (the last phase by default: the adversarial one for stage 1, the larger program).
    ``pixels``: a stage-1 example's shape, from ``pixel_shape``."""
    mesh_lib.check_rules(config.mesh.rules)
    rules = tuple(tuple(r) for r in config.mesh.rules)
    mesh = mesh_lib.make_mesh(mesh_shape, jax.devices("cpu")[:devices])
    mesh_lib.check_batch_size(config.train.batch_size, mesh, "train.batch_size")
    task, batch = _build_task(config, mesh, latent_shape, pixels)
    phase = phase or list(task.train_steps)[-1]
    if phase not in task.train_steps:
        raise ConfigError(f"--phase {phase!r}; this stage has {list(task.train_steps)}")
    rng = jax.random.key(config.seed)
    abstract, shardings, _ = build_state(task.init_state, mesh, rules, rng)
    step = jit_steps(task, shardings, mesh)[phase]
    rng_abstract = jax.ShapeDtypeStruct(rng.shape, rng.dtype, sharding=mesh_lib.replicated(mesh))
    start = time.perf_counter()
    with mesh_lib.activation_rules(mesh, rules):
        traced = step.trace(abstract, task.frozen, batch, rng_abstract)
        compiled = traced.lower().compile()
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
        example=tuple(next(v for k, v in batch.items() if k != "label").shape[1:]),
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
        flops=compiled_flops(compiled),
        compile_s=compile_s,
        loops=(loops := loop_trip_counts(compiled)),
        network_flops=_network_flops(traced, devices) if loops else None,
        live_bytes=sum(a.nbytes for a in jax.live_arrays()),
    )


def fsdp_sweep(config, sizes: list[int], **kwargs) -> list[Plan]:
    """The same step with parameters and optimiser state sharded over 1, 2, 4, … devices
    (mesh data=1, fsdp=n, tensor=1)."""
    return [plan(config, {"data": 1, "fsdp": n, "tensor": 1}, n, **kwargs) for n in sizes]


# ----------------------------------------------------------------------------- printing


def _gib(n: float) -> str:
    return f"{n / 2**30:.3f}"


def _network_flops(traced, devices: int) -> float | None:
    flops, exact = network_flops(traced.jaxpr)
    return flops / devices if exact else None


def _flops_caveat(p: Plan) -> str:
    if not p.loops:
        return ""
    counts = ", ".join(str(n) if n else "?" for n in p.loops)
    text = (
        f"\n    (a lower bound: the step has loops of {counts} iterations, e.g. a scan over "
        "chunks of frames, and XLA's cost analysis counts each loop's body once)"
    )
    if p.network_flops is not None:
        text += (
            f"\n  FLOPs per step of its products and convolutions, every loop trip counted: "
            f"{p.network_flops:.3e} per device, {p.network_flops * p.devices:.3e} in all"
        )
    return text


def format_plan(p: Plan, chip: topologies.Chip | None = None) -> str:
    mesh = " x ".join(f"{k}={v}" for k, v in p.mesh.items())
    lines = [
        f"plan: {p.config} (stage {p.stage}, step '{p.phase}') on {p.devices} devices, "
        f"mesh {mesh}, global batch {p.batch_size} of {' x '.join(map(str, p.example))}",
        f"  parameters: {p.num_params:,} ({p.num_params * 4 / 2**30:.2f} GiB as float32)",
        "  per device (GiB):",
        f"    parameters          {_gib(p.params):>10}",
        f"    EMA parameters      {_gib(p.ema):>10}",
        f"    optimiser state     {_gib(p.opt_state):>10}",
        f"    arguments (XLA)     {_gib(p.arguments):>10}",
        f"    temporaries (XLA)   {_gib(p.temporaries):>10}",
        f"    peak (args + outputs - aliased + temps) {_gib(p.peak)}",
        f"  FLOPs per step: {p.flops:.3e} per device, {p.flops * p.devices:.3e} in all"
        + _flops_caveat(p),
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
