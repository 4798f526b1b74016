"""``latentjax fid-stats``: FID reference statistics of a tfds dataset split."""

from __future__ import annotations

from latentjax.commands.common import add_parser


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "fid-stats",
        "FID reference statistics of a tfds dataset",
        "latentjax fid-stats --dataset imagenet2012 --split validation "
        "--weights pt_inception.pth --out imagenet_val.npz",
    )
    p.add_argument("--dataset", required=True, help="tfds dataset name")
    p.add_argument("--data-dir", default="", help="tfds data_dir")
    p.add_argument("--split", default="train")
    p.add_argument("--num", type=int, default=None, help="at most this many images")
    p.add_argument("--weights", required=True, help="pytorch-fid's pt_inception-*.pth")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--out", required=True, help="output .npz (mu, sigma)")
    p.set_defaults(run=run)


def run(args) -> None:
    from latentjax.convert.inception import load_inception
    from latentjax.eval import fid

    features = load_inception(args.weights)
    batches = fid.dataset_images(args.dataset, args.split, args.data_dir, args.num, args.batch_size)
    feats = fid.features_of(batches, features)
    fid.save_statistics(args.out, *fid.statistics(feats))
    print(f"latentjax: FID statistics of {len(feats)} images -> {args.out}")
