"""``latentjax train``: trains the stage a config names into a run directory (resuming it)."""

from __future__ import annotations

from latentjax.commands.common import add_distributed_args, add_parser


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "train",
        "train the stage a config names (resumes from --workdir)",
        "latentjax train --config ae/digits.py --workdir runs/digits/ae "
        "--config.train.num_steps=500",
    )
    p.add_argument(
        "--config",
        required=True,
        help="a built-in config (ae/digits.py, dit/digits.py, ...) or your own config file",
    )
    p.add_argument("--workdir", required=True, help="run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--profile",
        metavar="START:STEPS",
        default=None,
        help="trace STEPS steps from step START with jax.profiler into WORKDIR/tensorboard "
        "(train.profile_start / profile_steps), e.g. 10:3",
    )
    add_distributed_args(p)
    p.set_defaults(run=run, config_overrides=True)


def run(args) -> None:
    from latentjax.config import load_config
    from latentjax.parallel.distributed import describe_devices
    from latentjax.train.trainer import train

    config = load_config(args.config, args.overrides)
    if args.profile is not None:
        from latentjax.train.watch import parse_profile

        config.train.profile_start, config.train.profile_steps = parse_profile(args.profile)
    print(f"latentjax: training stage '{config.stage}' on {describe_devices()} -> {args.workdir}")
    train(config, args.workdir, progress=not args.no_progress)
