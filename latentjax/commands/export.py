"""``latentjax export``: a run's EMA (or autoencoder) parameters alone, as an inference
checkpoint (``latentjax/train/export.py``)."""

from __future__ import annotations

from latentjax.commands.common import add_distributed_args, add_parser


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "export",
        "write EMA parameters alone as an inference checkpoint",
        "latentjax export --workdir runs/digits/dit --out runs/dit_export",
    )
    p.add_argument("--workdir", required=True, help="a run directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--step",
        type=int,
        default=None,
        help="the checkpoint step to export (one the run keeps; default: the latest)",
    )
    add_distributed_args(p)
    p.set_defaults(run=run)


def run(args) -> None:
    from latentjax.train.export import export_run

    out = export_run(args.workdir, args.out, args.step)
    print(f"latentjax: exported {args.workdir} -> {out}")
