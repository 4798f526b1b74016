"""``latentjax fid``: the FID of sampled images against reference statistics."""

from __future__ import annotations

from latentjax.commands.common import add_parser


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "fid",
        "FID of sampled images against reference statistics",
        "latentjax fid samples.npz --ref imagenet_val.npz --weights pt_inception.pth",
    )
    p.add_argument("images", help=".npz with 'images' (latentjax sample --out) or a shard dir")
    p.add_argument("--ref", required=True, help="reference statistics .npz (mu, sigma)")
    p.add_argument("--weights", required=True, help="pytorch-fid's pt_inception-*.pth")
    p.add_argument("--batch-size", type=int, default=50)
    p.set_defaults(run=run)


def run(args) -> None:
    from latentjax.convert.inception import load_inception
    from latentjax.eval import fid

    fid.load_statistics(args.ref)  # fail before loading the network
    features = load_inception(args.weights)
    value = fid.fid(fid.read_images(args.images, args.batch_size), args.ref, features)
    print(f"latentjax: FID {value:.4f}")
