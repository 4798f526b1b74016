"""Pieces several subcommands share."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from latentjax.errors import LatentjaxError

if TYPE_CHECKING:
    import numpy as np


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


def parse_labels(spec: str | None, num: int, num_classes: int) -> np.ndarray:
    """``None`` -> classes in turn (0, 1, ..., 0, 1, ...); "3" -> all 3; "1,2,3" -> cycled
    (generation's :func:`~latentjax.generate.class_labels`, which the Python pipeline uses)."""
    from latentjax.generate import class_labels

    if num <= 0:
        raise LatentjaxError(f"--num must be positive, got {num}")
    labels = None
    if spec is not None and spec != "":
        try:
            labels = [int(s) for s in spec.split(",")]
        except ValueError:
            msg = f"--labels must be comma-separated integers, got {spec!r}"
            raise LatentjaxError(msg) from None
    return class_labels(labels, num, num_classes)


def parse_interval(spec: str | None) -> tuple[float, float] | None:
    """ "0.2,0.8" -> (0.2, 0.8)."""
    if spec is None:
        return None
    try:
        lo, hi = (float(s) for s in spec.split(","))
    except ValueError:
        raise LatentjaxError(f"--guidance-interval must be LO,HI, got {spec!r}") from None
    return lo, hi


def add_vgg16_arg(parser, prefix: str = "") -> None:
    """``--vgg16 DIR``: judge samples in LPIPS's VGG16 features (``eval/vgg_features.py``)."""
    parser.add_argument(
        "--vgg16",
        default=None,
        metavar="DIR",
        help=f"{prefix}judge samples in LPIPS's VGG16 features (a `latentjax convert lpips` "
        "directory): an offline feature space for datasets other than the embedded digits",
    )
