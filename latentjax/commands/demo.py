"""``latentjax demo``: both stages on the embedded digits, then judged samples."""

from __future__ import annotations

from latentjax.commands.common import add_distributed_args, add_parser


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "demo",
        "both stages on the embedded digits, then a sample grid and a summary",
        "latentjax demo --workdir runs/demo",
    )
    p.add_argument("--workdir", default="runs/demo")
    p.add_argument(
        "--quick", action="store_true", help="a few steps only (checks the pipeline, not quality)"
    )
    add_distributed_args(p)
    p.set_defaults(run=run)


def run(args) -> None:
    from latentjax.demo import run_demo
    from latentjax.parallel.distributed import describe_devices

    print(f"latentjax demo on {describe_devices()} -> {args.workdir}")
    summary = run_demo(args.workdir, quick=args.quick)
    print("\nlatentjax demo summary")
    for k, v in summary.items():
        print(f"  {k:28s} {v:.4g}" if isinstance(v, float) else f"  {k:28s} {v}")
    if args.quick:
        print(
            "latentjax: --quick trains each stage for 4 steps: it checks that the pipeline runs; "
            "its samples are not expected to look like digits (run without --quick for that)"
        )
