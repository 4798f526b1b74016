"""``latentjax config show CONFIG``: every key of a config, with its value and its comment."""

from __future__ import annotations

import argparse

from latentjax.commands.common import add_parser


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "config",
        "list a config's keys with their values and what they mean",
        "latentjax config show ae/digits.py --config.train.num_steps=500",
    )
    sub = p.add_subparsers(dest="config_command", required=True)
    s = sub.add_parser(
        "show",
        help="every key of CONFIG (after --config.a.b=v overrides) with its value and comment",
        description="Every key of a config, after its overrides, with its value and the "
        "comment that documents it.\n\nexample:\n  latentjax config show dit/digits.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("config", help="a built-in config (ae/digits.py, ...) or your own file")
    s.set_defaults(run=show, config_overrides=True)


def show(args) -> None:
    from latentjax.config import config_files, describe, load_config

    config = load_config(args.config, args.overrides)
    files, own = config_files(args.config)
    for line in describe(config, files, own):
        print(line)
