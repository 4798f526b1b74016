"""Pieces several subcommands share."""

from __future__ import annotations

import argparse


def add_parser(subparsers, name: str, summary: str, example: str, **kwargs):
    """A subcommand's parser whose help shows ``summary`` and an example command line."""
    return subparsers.add_parser(
        name,
        help=summary,
        description=f"{summary}.\n\nexample:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def add_distributed_args(p: argparse.ArgumentParser) -> None:
    """The multi-process flags (one process per host; every process runs the same command)."""
    g = p.add_argument_group("multi-process (one process per host; all run the same command)")
    g.add_argument("--coordinator", default=None, help="host:port of process 0")
    g.add_argument("--num-processes", type=int, default=None)
    g.add_argument("--process-id", type=int, default=None)
    g.add_argument("--distributed", action="store_true", help="auto-detect (Cloud TPU pods, SLURM)")
