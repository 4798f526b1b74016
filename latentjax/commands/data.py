"""``latentjax data build-folder DIR --name NAME``: a folder of images -> a tfds dataset."""

from __future__ import annotations

import argparse

from latentjax.commands.common import add_parser


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "data",
        "prepare datasets",
        "latentjax data build-folder ~/photos --name my_photos",
    )
    sub = p.add_subparsers(dest="data_command", required=True)
    b = sub.add_parser(
        "build-folder",
        help="a folder of images (class subfolders = labels) -> array_record tfds dataset",
        description="A folder of images (class subfolders = labels) -> an array_record tfds "
        "dataset.\n\nexample:\n  latentjax data build-folder ~/photos --name my_photos",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("dir", help="folder with one subfolder of images per class")
    b.add_argument("--name", required=True, help="dataset name (lower case, digits, '_')")
    b.add_argument("--data-dir", default=None, help="tfds data_dir (default: $LATENTJAX_DATA_DIR)")
    b.add_argument("--strict", action="store_true", help="a non-image file is an error")
    b.add_argument("--channels", type=int, default=3, help="3 (RGB) or 1 (grey); default 3")
    b.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="share of each class held out as the 'test' split (default 0.1; 0: train only)",
    )
    b.set_defaults(run=build_folder)


def build_folder(args) -> None:
    from latentjax.data.digits import default_data_dir
    from latentjax.data.folder import build_folder as build
    from latentjax.data.folder import held_out

    data_dir = args.data_dir or default_data_dir()
    scan = build(
        args.dir,
        args.name,
        data_dir,
        strict=args.strict,
        channels=args.channels,
        test_fraction=args.test_fraction,
    )
    for path, why in scan.skipped:
        print(f"latentjax: skipped {path}: {why}")
    test = len(held_out(scan.files, args.test_fraction))
    print(
        f"latentjax: built {args.name!r} in {data_dir}: {len(scan.files)} images "
        f"({len(scan.files) - test} train, {test} test), {len(scan.classes)} classes, "
        f"{len(scan.skipped)} skipped"
    )
