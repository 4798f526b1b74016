"""``latentjax encode`` (latent cache) and ``latentjax export`` (inference checkpoint)."""

from __future__ import annotations


def register(subparsers) -> None:
    from latentjax.cli import add_distributed_args

    p = subparsers.add_parser(
        "encode", help="encode a dataset with a trained autoencoder into a latent cache"
    )
    p.add_argument("--workdir", required=True, help="a stage-1 (ae) run directory")
    p.add_argument("--data", default=None, help="tfds dataset name (default: the run's)")
    p.add_argument("--split", default=None, help="split (default: the run's train split)")
    p.add_argument("--data-dir", default=None, help="tfds data_dir (default: the run's)")
    p.add_argument("--out", required=True, help="data_dir to write the latent dataset into")
    p.add_argument("--name", default=None, help="dataset name (default: <data>_latents)")
    p.add_argument("--flip", action="store_true", help="also encode horizontally flipped images")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (global)")
    add_distributed_args(p)
    p.set_defaults(run=cmd_encode)

    p = subparsers.add_parser(
        "export", help="write EMA parameters alone as an inference checkpoint"
    )
    p.add_argument("--workdir", required=True, help="a run directory")
    p.add_argument("--out", required=True, help="output directory")
    add_distributed_args(p)
    p.set_defaults(run=cmd_export)


def cmd_encode(args) -> None:
    from latentjax.data.latents import encode_run

    encode_run(
        args.workdir,
        out=args.out,
        data=args.data,
        split=args.split,
        data_dir=args.data_dir,
        name=args.name,
        flip=args.flip,
        batch_size=args.batch_size,
    )


def cmd_export(args) -> None:
    from latentjax.train.export import export_run

    out = export_run(args.workdir, args.out)
    print(f"latentjax: exported {args.workdir} -> {out}")
