"""``latentjax sample``: images from a trained (or converted) stage-2 run.

Samples are streamed to resumable shards and, with ``--out FILE.npz``, gathered into one file
with a PNG grid beside it. With ``--shard-dir DIR`` the shards stay (a later run with the same
settings and checkpoint reuses them; other settings are refused); with ``--out`` alone they go to
``FILE.shards/`` while sampling (an interrupted run resumes from them), which is removed once
``FILE.npz`` is written, and shards of other settings or another checkpoint there are replaced.

With ``--eval`` the samples just written are judged as ``latentjax eval`` judges a stage-2 run
(``latentjax/eval/generation.py``), at this command's own setting, labels and seed: beside the
real test split and the autoencoder's reconstructions of it, into ``FILE.eval/`` (or
``DIR/eval/``).
"""

from __future__ import annotations

import numpy as np

from latentjax.commands.common import (
    add_distributed_args,
    add_parser,
    add_vgg16_arg,
    parse_interval,
    parse_labels,
)
from latentjax.errors import LatentjaxError

# --out holds every image in one array: above this size, use --shard-dir alone.
MAX_NPZ_BYTES = 2 << 30
EVAL_K = 3  # --eval's precision/recall neighbours: it needs more samples than this


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "sample",
        "sample images from a trained stage-2 run",
        "latentjax sample --workdir runs/digits/dit --num 100 --labels 3 --out threes.npz",
    )
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
    p.add_argument(
        "--guidance-channels",
        type=int,
        default=None,
        help="guide only the first N latent channels (DiT's sampler: 3); 0 = all (default: config)",
    )
    p.add_argument(
        "--time-shift",
        type=float,
        default=None,
        help="the sampler's time shift s: steps uniform in the unshifted time, more of them at "
        "high noise for s > 1 (default: the one the run trained with, diffusion.time_shift)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="images per jitted call")
    p.add_argument(
        "--out",
        default=None,
        help="output .npz with all images (small N) and its .png grid; without --shard-dir the "
        "shards go to FILE.shards/ beside it while sampling (removed at the end)",
    )
    p.add_argument(
        "--shard-dir",
        default=None,
        help="directory of shard-NNNNN.npz + index.json (resumable); grid.png in it",
    )
    p.add_argument(
        "--eval",
        action="store_true",
        help="judge the samples as `latentjax eval` does (report.json and report.png in "
        "FILE.eval/ or DIR/eval/)",
    )
    p.add_argument(
        "--inception",
        default=None,
        metavar="WEIGHTS",
        help="with --eval: pytorch-fid weights for FID, sFID and Inception precision/recall "
        "(needed for datasets other than the embedded digits)",
    )
    add_vgg16_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_distributed_args(p)
    p.set_defaults(run=run)


def run(args) -> None:
    import jax

    from latentjax.generate import (
        check_guidance,
        load_generator,
        read_shards,
        save_frames,
        save_grid,
        spec_from_config,
        write_sample_shards,
        write_samples,
    )
    from latentjax.parallel.mesh import make_mesh
    from latentjax.paths import as_path, resolved
    from latentjax.run import Run

    if args.num <= 0:
        raise LatentjaxError(f"--num must be positive, got {args.num}")
    if args.out is None and args.shard_dir is None:
        raise LatentjaxError("give --out FILE.npz, --shard-dir DIR, or both")
    if args.out is not None and as_path(args.out).suffix != ".npz":
        raise LatentjaxError(f"--out must end in .npz, got {args.out}")
    if args.out is not None and as_path(args.out).is_dir():
        raise LatentjaxError(f"--out {args.out} is a directory; name a .npz file")
    run_ = Run.open(args.workdir, stage="dit")
    config = run_.config
    # Checks the sampler, steps, eta and interval before anything is loaded or compiled.
    spec = spec_from_config(
        config,
        sampler=args.sampler,
        num_steps=args.steps,
        eta=args.eta,
        cfg_scale=args.cfg,
        guidance_interval=parse_interval(args.guidance_interval),
        guidance_channels=args.guidance_channels,
        time_shift=args.time_shift,
    )
    check_guidance(config.model, spec)
    labels = parse_labels(args.labels, args.num, config.model.num_classes)
    space = None
    for flag in ("inception", "vgg16"):
        if getattr(args, flag) and not args.eval:
            raise LatentjaxError(f"--{flag} is for --eval")
    if args.eval and config.data.frames:  # a stage 2 on video latents records its clip length
        raise LatentjaxError(
            "--eval judges images; for clips of a video stage 2 it is not built yet"
        )
    if args.eval:
        from latentjax.eval.generation import judging_space

        if args.num <= EVAL_K:
            raise LatentjaxError(f"--eval needs --num above {EVAL_K} (its k-NN balls take k = 3)")
        space = judging_space(config.data.name, args.inception, args.vgg16)
    generator = load_generator(run_.path, make_mesh(config.mesh.shape))
    video = len(generator.image_shape) == 4
    if args.num * np.prod(generator.image_shape) > MAX_NPZ_BYTES:
        if args.eval:
            raise LatentjaxError(f"--eval would hold {args.num} images in memory; judge fewer")
        if args.out is not None:
            raise LatentjaxError(
                f"--out would hold {args.num} images in memory; use --shard-dir alone for this many"
            )
    shard_dir = (
        as_path(args.shard_dir) if args.shard_dir else as_path(args.out).with_suffix(".shards")
    )
    index = write_sample_shards(
        generator,
        labels,
        shard_dir,
        args.seed,
        spec,
        args.batch_size or config.sample.batch_size,
        progress=not args.no_progress,
        meta={"workdir": str(resolved(run_.path))},
        replace=args.shard_dir is None,
    )
    batch_size = args.batch_size or config.sample.batch_size
    references = None
    if space is not None:  # every process reconstructs (the autoencoder may be sharded)
        from latentjax.eval.generation import references as make_references

        references = make_references(config.data, generator, batch_size)
    if jax.process_index() != 0:  # only process 0 writes files
        return
    step = index["checkpoint"]["step"]
    how = f"{index['made']} made" + (f", {index['reused']} reused" if index["reused"] else "")
    if args.out is not None:
        images, got = read_shards(shard_dir)
        grid = write_samples(args.out, images, got)
        if args.shard_dir is None:
            shard_dir.rmtree()
        what = "clips" if video else "images"
        print(f"latentjax: wrote {len(images)} {what} ({how}; step {step}) to {args.out}, {grid}")
        eval_dir = as_path(args.out).with_suffix(".eval")
    else:
        images, got = read_shards(shard_dir, limit=None if references else 100)
        if video:
            grid = save_frames(shard_dir / "grid.png", images[:10])
        else:
            grid = save_grid(shard_dir / "grid.png", images[:100])
        what = "clips" if video else "images"
        print(f"latentjax: wrote {args.num} {what} ({how}; step {step}) to {shard_dir}, {grid}")
        eval_dir = shard_dir / "eval"
    if references is not None:
        _judge(images, got, references, space, spec, index, run_, args.seed, eval_dir)


def _judge(images, labels, references, space, spec, index, run_, seed, out) -> None:
    """``--eval``: the samples' report card (one point: this command's setting) into ``out``."""
    from latentjax.commands.eval import references_line, setting_of, stamped, summary
    from latentjax.eval import generation

    real, recon = references
    report, _ = generation.evaluate(
        lambda *_: images,
        real,
        recon,
        labels,
        [setting_of(spec)],
        features=space.features,
        classifier=space.classifier,
        spatial_features=space.spatial,
    )
    report = stamped(report, run_.path, index["checkpoint"]["step"], space, seed, len(images))
    paths = generation.write(report, out)
    print(f"latentjax: {summary(report['points'][0])}")
    print(f"latentjax: {references_line(report, paths)}")
