"""The ``latentjax`` command: train, sample, demo, and the subcommands of COMMAND_MODULES.

Errors a user can fix (a wrong config key, a missing run, a bad argument) are printed as one line
on stderr with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np

from latentjax.errors import LatentjaxError

# Subcommands defined beside the code they drive. Each module has ``register(subparsers)``, which
# adds its parser and calls ``parser.set_defaults(run=fn)`` (``fn(args) -> None``); a parser that
# also sets ``config_overrides=True`` receives ``--config.a.b=v`` items as ``args.overrides``.
COMMAND_MODULES: tuple[str, ...] = (
    "latentjax.parallel.plan",
    "latentjax.data.cli",
    "latentjax.train.cli",
    "latentjax.convert.cli",
    "latentjax.eval.fid",
    "latentjax.eval.cli",
)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="latentjax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the stage a config names (resumes from --workdir)")
    p.add_argument("--config", required=True, help="config file, e.g. configs/ae/digits.py")
    p.add_argument("--workdir", required=True, help="run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _distributed_args(p)

    p = sub.add_parser("sample", help="sample images from a trained stage-2 run")
    p.add_argument("--workdir", required=True, help="a stage-2 (dit) run directory")
    p.add_argument("--num", type=int, required=True, help="number of images")
    p.add_argument("--labels", default=None, help="class labels, e.g. '3' or '0,1,2' (cycled)")
    p.add_argument(
        "--sampler",
        default=None,
        help="ddim, ddpm, dpmpp_2m, euler, heun or euler_maruyama (default: config)",
    )
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: config)")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta (default: config)")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (default: config)")
    p.add_argument(
        "--guidance-interval",
        default=None,
        help="LO,HI: guide only for path times t in [LO, HI] (default: config)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="images per jitted call")
    p.add_argument(
        "--out",
        default=None,
        help="output .npz with all images (small N); its .png grid and, unless --shard-dir is "
        "given, its shards in FILE.shards/ are written beside it",
    )
    p.add_argument(
        "--shard-dir",
        default=None,
        help="directory of shard-NNNNN.npz + index.json (resumable); grid.png in it",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _distributed_args(p)

    p = sub.add_parser("demo", help="both stages on the embedded digits, then a sample grid")
    p.add_argument("--workdir", default="runs/demo")
    p.add_argument(
        "--quick", action="store_true", help="a few steps only (checks the pipeline, not quality)"
    )
    _distributed_args(p)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)

    args, rest = parser.parse_known_args(argv)
    overrides = []
    takes_overrides = args.command == "train" or getattr(args, "config_overrides", False)
    for item in rest:
        if takes_overrides and item.startswith("--config."):
            overrides.append(item[len("--config.") :])
        else:
            parser.error(f"unrecognized argument: {item}")
    args.overrides = overrides
    return args, overrides


def add_distributed_args(p: argparse.ArgumentParser) -> None:
    """The multi-process flags every subcommand takes (for modules of :data:`COMMAND_MODULES`)."""
    _distributed_args(p)


def _distributed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("multi-process (one process per host; all run the same command)")
    g.add_argument("--coordinator", default=None, help="host:port of process 0")
    g.add_argument("--num-processes", type=int, default=None)
    g.add_argument("--process-id", type=int, default=None)
    g.add_argument("--distributed", action="store_true", help="auto-detect (Cloud TPU pods, SLURM)")


def _setup_runtime() -> None:
    # Grain worker processes read absl flags; outside absl.app.run they are unparsed.
    import absl.flags

    absl.flags.FLAGS.mark_as_parsed()


def cmd_train(args, overrides) -> None:
    from latentjax.config import load_config
    from latentjax.train.main import describe_devices, train

    config = load_config(args.config, overrides)
    print(f"latentjax: training stage '{config.stage}' on {describe_devices()} -> {args.workdir}")
    train(config, args.workdir, progress=not args.no_progress)


def write_samples(
    out: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    ncol: int = 10,
    grid: np.ndarray | None = None,
) -> Path:
    """``out`` (.npz: images, labels) and a PNG grid beside it of ``grid`` (default: all)."""
    from latentjax.eval.images import image_grid, save_png

    out = Path(out)
    if out.suffix != ".npz":
        raise LatentjaxError(f"--out must end in .npz, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, images=images, labels=labels)
    scale = max(1, 128 // images.shape[1])
    shown = images if grid is None else grid
    return save_png(out.with_suffix(".png"), image_grid(shown, ncol=ncol), scale=scale)


# --out holds every image in one array: above this size, use --shard-dir alone.
MAX_NPZ_BYTES = 2 << 30


def cmd_sample(args) -> None:
    """Streams samples to shards (resumable), then optionally gathers them into ``--out``."""
    import jax

    from latentjax.config import from_json
    from latentjax.eval.images import image_grid, save_png
    from latentjax.generate import (
        load_generator,
        parse_interval,
        parse_labels,
        read_shards,
        spec_from_config,
        write_sample_shards,
    )
    from latentjax.parallel.mesh import make_mesh

    if args.num <= 0:
        raise LatentjaxError(f"--num must be positive, got {args.num}")
    if args.out is None and args.shard_dir is None:
        raise LatentjaxError("give --out FILE.npz, --shard-dir DIR, or both")
    if args.out is not None and Path(args.out).suffix != ".npz":
        raise LatentjaxError(f"--out must end in .npz, got {args.out}")
    workdir = Path(args.workdir)
    if not (workdir / "config.json").exists():
        raise LatentjaxError(f"no run at {workdir} (missing config.json)")
    config = from_json((workdir / "config.json").read_text())
    if config.get("stage") != "dit":
        raise LatentjaxError(
            f"{workdir} holds a '{config.get('stage')}' run; sampling needs a stage-2 (dit) run"
        )
    # Checks the sampler, steps, eta and interval before anything is loaded or compiled.
    spec = spec_from_config(
        config,
        sampler=args.sampler,
        num_steps=args.steps,
        eta=args.eta,
        cfg_scale=args.cfg,
        guidance_interval=parse_interval(args.guidance_interval),
    )
    labels = parse_labels(args.labels, args.num, config.model.num_classes)
    mesh = make_mesh(config.mesh.shape)
    generator = load_generator(workdir, mesh)
    if args.out is not None and args.num * np.prod(generator.image_shape) > MAX_NPZ_BYTES:
        raise LatentjaxError(
            f"--out would hold {args.num} images in memory; use --shard-dir alone for this many"
        )
    shard_dir = Path(args.shard_dir) if args.shard_dir else Path(args.out).with_suffix(".shards")
    write_sample_shards(
        generator,
        labels,
        shard_dir,
        args.seed,
        spec,
        args.batch_size or config.sample.batch_size,
        progress=not args.no_progress,
        meta={"workdir": str(workdir.resolve())},
    )
    if jax.process_index() != 0:  # only process 0 writes files
        return
    if args.out is not None:
        images, got = read_shards(shard_dir)
        grid = write_samples(args.out, images, got)
        print(f"latentjax: wrote {len(images)} images to {args.out} and {grid} ({shard_dir})")
    else:
        images, _ = read_shards(shard_dir, limit=100)
        scale = max(1, 128 // images.shape[1])
        grid = save_png(shard_dir / "grid.png", image_grid(images, ncol=10), scale=scale)
        print(f"latentjax: wrote {args.num} images to {shard_dir} and {grid}")


def collect_samples(generator, labels, config, seed=0, steps=None, cfg=None, chunk=None):
    """All samples for ``labels`` as one uint8 array (small N), with a progress bar; sampler
    settings from ``config.sample``."""
    from tqdm.auto import tqdm

    from latentjax.generate import spec_from_config

    spec = spec_from_config(config, num_steps=steps, cfg_scale=cfg)
    chunk = chunk or config.sample.batch_size
    out = []
    with tqdm(total=len(labels), desc="sample", unit="img", dynamic_ncols=True) as bar:
        for images in generator.sample(labels, seed, spec, chunk):
            out.append(images)
            bar.update(len(images))
    return np.concatenate(out)


def cmd_demo(args) -> None:
    from latentjax.demo import run_demo

    run_demo(args.workdir, quick=args.quick)


def main(argv: list[str] | None = None) -> int:
    args, overrides = _parse(sys.argv[1:] if argv is None else argv)
    _setup_runtime()
    start = time.time()
    try:
        from latentjax.parallel import distributed

        distributed.initialize(
            getattr(args, "coordinator", None),
            getattr(args, "num_processes", None),
            getattr(args, "process_id", None),
            getattr(args, "distributed", False),
        )
        if getattr(args, "run", None) is not None:
            args.run(args)
        elif args.command == "train":
            cmd_train(args, overrides)
        elif args.command == "sample":
            cmd_sample(args)
        elif args.command == "demo":
            cmd_demo(args)
    except LatentjaxError as e:
        print(f"latentjax: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latentjax: interrupted", file=sys.stderr)
        return 130
    print(f"latentjax: {args.command} finished in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
