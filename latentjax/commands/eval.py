"""``latentjax eval``: the report card of a stage-1 run (``latentjax/eval/autoencoder.py``)."""

from __future__ import annotations

from latentjax.commands.common import add_parser
from latentjax.errors import LatentjaxError


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "eval",
        "report card of a stage-1 run -> DIR/eval/",
        "latentjax eval --workdir runs/digits/ae",
    )
    p.add_argument("--workdir", required=True, help="a stage-1 (ae) run directory")
    p.add_argument("--split", default=None, help="split to evaluate (default: data.eval_split)")
    p.add_argument("--max-images", type=int, default=1024, help="evaluate at most this many")
    p.add_argument("--batch-size", type=int, default=128, help="images per jitted call")
    p.add_argument("--num-show", type=int, default=8, help="images in the PNGs")
    p.add_argument(
        "--lpips",
        nargs=2,
        default=None,
        metavar=("VGG", "HEADS"),
        help="LPIPS from torchvision's VGG16 and lpips' vgg.pth head weights",
    )
    p.add_argument(
        "--inception", default=None, metavar="WEIGHTS", help="pytorch-fid weights: adds rFID"
    )
    p.set_defaults(run=run, config_overrides=True)
    p.epilog = (
        "--config.data.KEY=VALUE evaluates on other data than the run's, e.g. your own dataset: "
        "--config.data.name=my_photos --config.data.data_dir=DIR --config.data.image_size=64"
    )


def run(args) -> None:
    from pathlib import Path

    import jax
    import ml_collections
    import numpy as np

    from latentjax.config import apply_overrides
    from latentjax.eval.autoencoder import check_options, evaluate
    from latentjax.parallel.mesh import make_mesh
    from latentjax.run import Run
    from latentjax.train.autoencoder import load_autoencoder

    check_options(args.max_images, args.batch_size, args.num_show)
    not_data = [o for o in args.overrides if not o.startswith("data.")]
    if not_data:
        raise LatentjaxError(
            f"--config.{not_data[0]}: eval takes overrides of the data section only"
        )
    lpips_fn = feature_fn = None
    if args.lpips:
        for path in args.lpips:
            if not Path(path).is_file():
                raise LatentjaxError(f"--lpips: no such file {path}")
        from latentjax.convert.lpips import load_lpips

        lpips = load_lpips(*args.lpips)

        def lpips_fn(x, y):  # grey images repeated over RGB, the channels VGG16 takes
            rgb = [np.repeat(a, 3, -1) if a.shape[-1] == 1 else a for a in map(np.asarray, (x, y))]
            return lpips(*rgb)

    if args.inception:
        if not Path(args.inception).is_file():
            raise LatentjaxError(f"--inception: no such file {args.inception}")
        from latentjax.convert.inception import image_features

        feature_fn = image_features(args.inception)
    run_ = Run.open(args.workdir, stage="ae")
    data = ml_collections.ConfigDict(run_.config.data.to_dict())
    data.lock()
    apply_overrides(data, [o.removeprefix("data.") for o in args.overrides])
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
        data=data,
    )
    if jax.process_index() == 0:
        ssim = "n/a" if report["ssim"] is None else f"{report['ssim']:.4f}"
        print(
            f"latentjax: PSNR {report['psnr']:.2f} dB, SSIM {ssim}, active units "
            f"{report['active_units']['count']}/{report['active_units']['total']}, size "
            f"reduction {report['size_reduction']:g} -> {Path(args.workdir) / 'eval'}"
        )
