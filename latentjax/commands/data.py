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
    b.set_defaults(run=build_folder)


def build_folder(args) -> None:
    from latentjax.data.digits import default_data_dir
    from latentjax.data.folder import build_folder as build

    data_dir = args.data_dir or default_data_dir()
    scan = build(args.dir, args.name, data_dir, strict=args.strict, channels=args.channels)
    for path, why in scan.skipped:
        print(f"latentjax: skipped {path}: {why}")
    print(
        f"latentjax: built {args.name!r} in {data_dir}: {len(scan.files)} images, "
        f"{len(scan.classes)} classes, {len(scan.skipped)} skipped"
    )
