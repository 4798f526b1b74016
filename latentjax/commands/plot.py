"""``latentjax plot``: a run's ``metrics.jsonl`` as PNG figures (``latentjax/train/plots.py``)."""

from __future__ import annotations

from latentjax.commands.common import add_parser


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "plot",
        "plot a run's losses and throughput over time to PNG (needs matplotlib)",
        "latentjax plot --workdir runs/digits/ae",
    )
    p.add_argument("--workdir", required=True, help="a training run directory")
    p.add_argument("--out", default=None, help="output directory (default WORKDIR/plots)")
    p.set_defaults(run=run)


def run(args) -> None:
    from latentjax.train.plots import plot_run

    for path in plot_run(args.workdir, args.out):
        print(f"latentjax: wrote {path}")
