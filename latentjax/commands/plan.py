"""``latentjax plan``: compile a config's train step over N fake CPU devices and report memory,
FLOPs and whether it fits a chip (``latentjax/plan.py``), before renting a slice."""

from __future__ import annotations

import os
import re
import sys

from latentjax.commands.common import add_parser
from latentjax.errors import ConfigError, LatentjaxError

REEXEC_ENV = "LATENTJAX_PLAN_REEXEC"
_COUNT_FLAG = "--xla_force_host_platform_device_count"


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "plan",
        "compile the train step over N fake devices and report memory, FLOPs and fit",
        "latentjax plan --config dit/dit_xl2_imagenet256.py --topology v5p-64 "
        "--ae-config ae/kl_f8c4_imagenet256.py\n"
        "  latentjax plan --config ae/wan21_480p.py --topology v5p-64 --frames 81 --size 480,832",
    )
    p.add_argument("--config", required=True, help="a built-in config or your own config file")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--devices", type=int, default=None, help="number of devices")
    where.add_argument("--topology", default=None, help="a named slice, e.g. v5p-64, h100-8")
    where.add_argument(
        "--sweep-fsdp", default=None, help="e.g. 1,2,4,8: FSDP over each count (mesh fsdp=n)"
    )
    p.add_argument("--phase", default=None, help="train-step phase (default: the last)")
    p.add_argument("--ae-config", default=None, help="dit: stage-1 config giving latent shape")
    p.add_argument("--latent-shape", default=None, help="dit: latent H,W,C (e.g. 32,32,4)")
    p.add_argument(
        "--frames", type=int, default=None, help="video stage 1: frames per clip (e.g. 81)"
    )
    p.add_argument(
        "--size", default=None, help="stage 1: frame size H,W in place of data.image_size"
    )
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(run=run, config_overrides=True)


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


def _counts(raw: str) -> list[int]:
    try:
        counts = [int(v) for v in raw.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ConfigError(f"--sweep-fsdp {raw!r}: use device counts such as 1,2,4,8")
    return counts


def run(args) -> None:
    import json

    from latentjax import plan as plan_lib
    from latentjax.config import load_config
    from latentjax.parallel import topologies
    from latentjax.paths import as_path

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
    latent = pixels = None
    if config.stage == "dit":
        latent = plan_lib.stage2_latent_shape(
            config, args.ae_config, args.latent_shape, args.frames, args.size
        )
    else:
        pixels = plan_lib.pixel_shape(config, args.frames, args.size)
    ensure_fake_devices(n)
    kwargs = {"phase": args.phase, "latent_shape": latent, "pixels": pixels, "name": args.config}
    if sweep:
        plans = plan_lib.fsdp_sweep(config, sweep, **kwargs)
        for p in plans:
            print(plan_lib.format_plan(p))
        print(plan_lib.format_sweep(plans))
    else:
        plans = [plan_lib.plan(config, dict(config.mesh.shape), n, **kwargs)]
        print(plan_lib.format_plan(plans[0], topology.chip if topology else None))
        if topology:
            print(f"  {topology.name}: {n} chips on {topology.hosts} hosts")
    if args.json:
        as_path(args.json).write_text(json.dumps([p.to_json() for p in plans], indent=2))
