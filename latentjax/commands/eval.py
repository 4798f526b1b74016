"""``latentjax eval``: the report card of a run.

A stage-1 run: reconstruction and the latent space (``latentjax/eval/autoencoder.py``). A stage-2
run: samples judged as a distribution beside real-vs-real and the autoencoder's reconstructions,
at one guidance setting or a sweep of them (``latentjax/eval/generation.py``).
"""

from __future__ import annotations

from latentjax.commands.common import add_parser, add_vgg16_arg
from latentjax.errors import LatentjaxError

STAGE1_DEFAULTS = {"max_images": 1024, "batch_size": 128, "num_show": 8}


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "eval",
        "report card of a run -> DIR/eval/ (stage 1: reconstruction and latents; stage 2: "
        "samples judged as a distribution, optionally over a sweep of guidance scales)",
        "latentjax eval --workdir runs/digits/ae\n"
        "  latentjax eval --workdir runs/digits/dit --cfg 1,1.5,2,3",
    )
    p.add_argument("--workdir", required=True, help="a stage-1 (ae) or stage-2 (dit) run directory")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per jitted call (default: 128 for stage 1, sample.batch_size for stage 2)",
    )
    p.add_argument(
        "--inception",
        default=None,
        metavar="WEIGHTS",
        help="pytorch-fid weights: adds rFID (stage 1); FID and Inception precision/recall "
        "(stage 2; needed for datasets other than the embedded digits)",
    )
    add_vgg16_arg(p, "stage 1: the interpolation score in VGG16's features; stage 2: ")
    p.add_argument(
        "--split",
        default=None,
        help="stage 1: the split to evaluate; stage 2: the held-out split judged beside the "
        "samples (real_test; real-vs-real and the reconstructions are chunks of the training "
        "split held out in turn) (default: data.eval_split)",
    )
    one = p.add_argument_group("stage 1")
    one.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="evaluate at most this many images (clips, for a video run)",
    )
    one.add_argument("--num-show", type=int, default=None, help="images in the PNGs")
    one.add_argument(
        "--lpips",
        nargs="+",
        default=None,
        metavar="WEIGHTS",
        help="LPIPS: a `latentjax convert lpips` directory, or torchvision's VGG16 file and "
        "lpips' vgg.pth head file",
    )
    two = p.add_argument_group("stage 2")
    two.add_argument(
        "--num", type=int, default=None, help="samples per setting, classes in turn (default 1000)"
    )
    two.add_argument(
        "--cfg",
        default=None,
        help="guidance scale, or several comma-separated for a sweep (default: the run's)",
    )
    two.add_argument(
        "--guidance-interval",
        action="append",
        default=None,
        metavar="LO,HI",
        help="guide only for path times in [LO, HI]; repeat it to sweep intervals too",
    )
    two.add_argument("--sampler", default=None, help="sampler (default: the run's)")
    two.add_argument("--steps", type=int, default=None, help="sampler steps (default: the run's)")
    two.add_argument("--seed", type=int, default=None, help="sampling seed (default 0)")
    two.add_argument("--out", default=None, help="output directory (default: WORKDIR/eval)")
    p.set_defaults(run=run, config_overrides=True)
    p.epilog = (
        "--config.data.KEY=VALUE (stage 1) evaluates on other data than the run's, e.g. your own "
        "dataset: --config.data.name=my_photos --config.data.data_dir=DIR "
        "--config.data.image_size=64"
    )


def _given(args, names) -> list[str]:
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None]


def parse_scales(spec: str | None) -> list[float] | None:
    """ "1,1.5,2" -> [1.0, 1.5, 2.0]."""
    if spec is None:
        return None
    try:
        scales = [float(s) for s in spec.split(",")]
    except ValueError:
        raise LatentjaxError(f"--cfg must be comma-separated numbers, got {spec!r}") from None
    return scales


def run(args) -> None:
    from latentjax.run import Run

    run_ = Run.open(args.workdir)
    if run_.stage == "dit":
        return run_stage2(args, run_)
    wrong = _given(args, ["num", "cfg", "guidance_interval", "sampler", "steps", "seed", "out"])
    if wrong:
        raise LatentjaxError(f"{wrong[0]} is for a stage-2 run; {args.workdir} is a stage-1 run")
    for name, value in STAGE1_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return run_stage1(args, run_)


def run_stage1(args, run_) -> None:
    import jax
    import ml_collections
    import numpy as np

    from latentjax.config import apply_overrides
    from latentjax.eval.autoencoder import check_options, evaluate
    from latentjax.parallel.mesh import make_mesh
    from latentjax.paths import as_path
    from latentjax.train.autoencoder import load_autoencoder

    check_options(args.max_images, args.batch_size, args.num_show)
    not_data = [o for o in args.overrides if not o.startswith("data.")]
    if not_data:
        raise LatentjaxError(
            f"--config.{not_data[0]}: eval takes overrides of the data section only"
        )
    lpips_fn = feature_fn = space_fn = None
    if args.vgg16:
        from latentjax.eval.vgg_features import unit_images, vgg16_features

        space_fn = unit_images(vgg16_features(args.vgg16))
    if args.lpips:
        if len(args.lpips) > 2:
            raise LatentjaxError("--lpips takes a converted directory or two files (VGG, HEADS)")
        if len(args.lpips) == 1:
            if not as_path(args.lpips[0]).is_dir():
                raise LatentjaxError(f"--lpips: no such directory {args.lpips[0]}")
        else:
            for path in args.lpips:
                if not as_path(path).is_file():
                    raise LatentjaxError(f"--lpips: no such file {path}")
        from latentjax.convert.lpips import load_lpips

        lpips = load_lpips(*args.lpips)

        def lpips_fn(x, y):  # grey images repeated over RGB, the channels VGG16 takes
            rgb = [np.repeat(a, 3, -1) if a.shape[-1] == 1 else a for a in map(np.asarray, (x, y))]
            return lpips(*rgb)

    if args.inception:
        if not as_path(args.inception).is_file():
            raise LatentjaxError(f"--inception: no such file {args.inception}")
        from latentjax.convert.inception import image_features

        feature_fn = image_features(args.inception)
    data = ml_collections.ConfigDict(run_.config.data.to_dict())
    data.lock()
    apply_overrides(data, [o.removeprefix("data.") for o in args.overrides])
    if lpips_fn is not None:
        from latentjax.models.lpips import too_small

        if why := too_small(data.image_size, data.image_size):
            raise LatentjaxError(f"--lpips {why} (data.image_size={data.image_size})")
    stage, params = load_autoencoder(run_, make_mesh(run_.config.mesh.shape))
    report = evaluate(
        run_,
        stage.ae,
        params,
        split=args.split,
        max_images=args.max_images,
        batch_size=args.batch_size,
        num_show=args.num_show,
        lpips_fn=lpips_fn,
        feature_fn=feature_fn,
        space_fn=space_fn,
        space_name="vgg16",
        data=data,
    )
    if jax.process_index() == 0:
        ssim = "n/a" if report["ssim"] is None else f"{report['ssim']:.4f}"
        flicker = f", flicker {report['flicker']:.4f}" if "flicker" in report else ""
        print(
            f"latentjax: PSNR {report['psnr']:.2f} dB, SSIM {ssim}{flicker}, active units "
            f"{report['active_units']['count']}/{report['active_units']['total']}, size "
            f"reduction {report['size_reduction']:g} -> {as_path(args.workdir) / 'eval'}"
        )
        if "modelability" in report:
            print(f"latentjax: modelability proxies: {proxies_line(report['modelability'])}")


def proxies_line(proxies: dict) -> str:
    """The stage-1 report's modelability proxies as a line."""
    parts = [
        f"high-frequency energy {proxies['latent_high_frequency']:.0%} of the latents' "
        f"(pixels {proxies['pixel_high_frequency']:.0%})"
    ]
    if proxies["linear_probe"] is not None:
        parts.append(f"linear probe {proxies['linear_probe']:.3f} (chance {proxies['chance']:.3f})")
    if proxies["interpolation"] is not None:
        i = proxies["interpolation"]
        parts.append(
            f"interpolation Fréchet {i['frechet_ratio']:.2f}x real-vs-real "
            f"(reconstructions {i['recon_frechet_ratio']:.2f}x)"
        )
    return ", ".join(parts)


def run_stage2(args, run_) -> None:
    import jax
    import numpy as np

    from latentjax.commands.common import parse_interval
    from latentjax.eval import generation
    from latentjax.generate import (
        check_guidance,
        collect_samples,
        load_generator,
        save_grid,
        spec_from_config,
    )
    from latentjax.parallel.mesh import make_mesh
    from latentjax.paths import as_path

    wrong = _given(args, ["max_images", "num_show", "lpips"])
    if wrong or args.overrides:
        flag = wrong[0] if wrong else f"--config.{args.overrides[0]}"
        raise LatentjaxError(f"{flag} is for a stage-1 run; {args.workdir} is a stage-2 run")
    config = run_.config
    num = 1000 if args.num is None else args.num
    if num <= 0:
        raise LatentjaxError(f"--num must be positive, got {num}")
    if args.batch_size is not None and args.batch_size <= 0:
        raise LatentjaxError(f"--batch-size must be positive, got {args.batch_size}")
    scales = parse_scales(args.cfg) or [config.sample.cfg_scale]
    intervals = [parse_interval(i) for i in args.guidance_interval or []] or [None]
    base = {"sampler": args.sampler, "num_steps": args.steps}
    settings, specs = [], []
    for scale in scales:
        for interval in intervals:
            # Checks every setting before anything is loaded or compiled.
            spec = spec_from_config(config, **base, cfg_scale=scale, guidance_interval=interval)
            check_guidance(config.model, spec)
            specs.append(spec)
            settings.append(setting_of(spec))
    space = generation.judging_space(config.data.name, args.inception, args.vgg16)
    seed = 0 if args.seed is None else args.seed
    batch_size = args.batch_size or config.sample.batch_size
    generator = load_generator(run_.path, make_mesh(config.mesh.shape))
    real, recon = generation.references(config.data, generator, batch_size, args.split)
    labels = generation.judged_labels(real, num, config.model.num_classes)
    spec_of = {id(s): spec for s, spec in zip(settings, specs, strict=True)}

    def sample(labels, setting):
        return collect_samples(generator, labels, spec_of[id(setting)], batch_size, seed)

    def progress(point):
        if jax.process_index() == 0:
            print(f"latentjax: {generation.setting_label(point)}: {summary(point)}", flush=True)

    default = {
        "cfg_scale": float(config.sample.cfg_scale),
        "guidance_interval": list(config.sample.guidance_interval),
    }
    report, images = generation.evaluate(
        sample,
        real,
        recon,
        labels,
        settings,
        features=space.features,
        classifier=space.classifier,
        spatial_features=space.spatial,
        default=default,
        on_point=progress,
    )
    report = stamped(report, run_.path, generator.checkpoint["step"], space, seed, num)
    if jax.process_index() != 0:
        return
    out = as_path(args.out) if args.out else run_.path / "eval"
    paths = generation.write(report, out)
    for point, imgs in zip(report["points"], images, strict=True):
        tag = generation.setting_tag(point)
        # Up to 10 classes, a row each: the first 10 samples asked for that class.
        rows = [imgs[labels == c][:10] for c in np.unique(labels)[:10]]
        save_grid(out / f"samples_{tag}.png", np.concatenate(rows), ncol=len(rows[0]))
    print(f"latentjax: {references_line(report, paths)}")


def setting_of(spec) -> dict:
    """A report point's sampling setting: the keys of a ``SampleSpec`` the card shows."""
    return {
        "cfg_scale": spec.cfg_scale,
        "guidance_interval": list(spec.guidance_interval),
        "sampler": spec.sampler,
        "num_steps": spec.num_steps,
    }


def stamped(report: dict, workdir, step: int, space, seed: int, num: int) -> dict:
    """``generation.evaluate``'s report with what it judged: the run, its checkpoint's step,
    the feature space, the sampling seed and the number of samples per setting."""
    return {
        "workdir": str(workdir),
        "step": step,
        "feature_space": space.name,
        "seed": seed,
        "num_samples": num,
        **report,
    }


def summary(point: dict) -> str:
    """One set's figures as a line: recognised (when judged), precision, recall, the Fréchet
    distance (and sFID) as multiples of real-vs-real, within-class variance."""
    rec = f"recognised {point['recognised']:.3f}, " if "recognised" in point else ""
    sfid = f", sFID {point['sfid_ratio']:.2f}x" if "sfid_ratio" in point else ""
    variance = point["class_variance_ratio"]  # None: no class with 2+ samples and real images
    variance = "n/a" if variance is None else f"{variance:.2f} of real"
    return (
        f"{rec}precision {point['precision']:.3f}, recall {point['recall']:.3f}, Fréchet "
        f"{point['frechet_ratio']:.2f}x real-vs-real{sfid}, within-class variance {variance}"
    )


def references_line(report: dict, paths: dict) -> str:
    """The references' line closing a report: real-vs-real (1x), the test split, the
    reconstructions, the files written."""
    r, t, c = report["real_heldout"], report["real_test"], report.get("recon")
    ceiling = f", reconstructions {c['frechet_ratio']:.2f}x" if c else ""
    plots = [str(p) for p in paths.values() if p is not None]
    return (
        f"real-vs-real Fréchet {r['frechet']:.4g} (= 1x: training images held out, "
        f"sd {r['frechet_sd']:.2g} over {report['heldout_chunks']} chunks), real test split "
        f"{t['frechet_ratio']:.2f}x{ceiling}; wrote {', '.join(plots)}"
    ) + ("" if paths["card"] else " (plots need matplotlib: pip install matplotlib)")
