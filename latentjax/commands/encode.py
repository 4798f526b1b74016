"""``latentjax encode``: a dataset's latents under a stage-1 run, as a latent cache."""

from __future__ import annotations

from latentjax.commands.common import add_distributed_args, add_parser


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "encode",
        "encode a dataset with a trained autoencoder into a latent cache",
        "latentjax encode --workdir runs/digits/ae --out runs/latents --flip",
    )
    p.add_argument("--workdir", required=True, help="a stage-1 (ae) run directory")
    p.add_argument("--data", default=None, help="tfds dataset name (default: the run's)")
    p.add_argument("--split", default=None, help="split (default: the run's train split)")
    p.add_argument("--data-dir", default=None, help="tfds data_dir (default: the run's)")
    p.add_argument(
        "--out",
        required=True,
        help="data_dir to write the latent dataset into (a folder or gs://…)",
    )
    p.add_argument("--name", default=None, help="dataset name (default: latentjax_latents)")
    p.add_argument("--flip", action="store_true", help="also encode horizontally flipped images")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (global)")
    add_distributed_args(p)
    p.set_defaults(run=run)


def run(args) -> None:
    import jax

    from latentjax.train.latent_cache import encode_run

    info = encode_run(
        args.workdir,
        out=args.out,
        data=args.data,
        split=args.split,
        data_dir=args.data_dir,
        name=args.name,
        flip=args.flip,
        batch_size=args.batch_size,
    )
    if jax.process_index() == 0:
        print(
            f"latentjax: wrote {info['count']} latents {tuple(info['latent_shape'])} of "
            f"{info['data']}:{info['split']}{' (and flipped)' if args.flip else ''} as "
            f"{info['name']!r} in {args.out}"
        )
