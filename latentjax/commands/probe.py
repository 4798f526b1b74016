"""``latentjax probe``: how well a fixed small DiT models a stage-1 run's latents, over seeds
(``latentjax/probe.py``): the truth beside ``eval``'s cheap modelability proxies."""

from __future__ import annotations

from latentjax.commands.common import add_parser, add_vgg16_arg
from latentjax.errors import LatentjaxError


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "probe",
        "train a fixed small DiT on a stage-1 run's latents for a fixed budget, once per seed, "
        "and judge its samples -> OUT/probe.json (resumable)",
        "latentjax probe --workdir runs/digits/ae --steps 1000 --seeds 0,1,2",
    )
    p.add_argument("--workdir", required=True, help="the stage-1 (autoencoder) run to probe")
    p.add_argument("--out", default=None, help="probe directory (default: WORKDIR/probe)")
    p.add_argument(
        "--config",
        default="dit/digits.py",
        help="the DiT config every space is probed with (default dit/digits.py); its data "
        "section is replaced by the autoencoder run's",
    )
    p.add_argument("--steps", type=int, default=1000, help="training steps per seed (budget)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--num", type=int, default=500, help="samples judged per seed")
    p.add_argument(
        "--inception",
        default=None,
        metavar="WEIGHTS",
        help="pytorch-fid weights: judge in Inception's space (needed beyond the digits)",
    )
    add_vgg16_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run, config_overrides=True)


def parse_seeds(spec: str) -> list[int]:
    """ "0,1,2" -> [0, 1, 2]."""
    try:
        return [int(s) for s in spec.split(",")]
    except ValueError:
        raise LatentjaxError(f"--seeds must be comma-separated integers, got {spec!r}") from None


def run(args) -> None:
    import jax

    from latentjax.paths import as_path
    from latentjax.probe import PROBE_FILE, probe

    out = args.out or as_path(args.workdir) / "probe"

    def line(seed, figures):
        if jax.process_index() == 0:
            from latentjax.commands.eval import summary

            print(f"latentjax: probe seed {seed}: {summary(figures)}", flush=True)

    report = probe(
        args.workdir,
        out,
        config_name=args.config,
        overrides=args.overrides,
        steps=args.steps,
        seeds=parse_seeds(args.seeds),
        num=args.num,
        inception=args.inception,
        vgg16=args.vgg16,
        progress=not args.no_progress,
        on_seed=line,
    )
    if jax.process_index() == 0:
        f = report["summary"]["frechet_ratio"]
        recon = report["recon"]["frechet_ratio"]
        print(
            f"latentjax: probe: Fréchet {f['mean']:.2f} ± {f['std']:.2f}x real-vs-real over "
            f"{f['seeds']} seeds (reconstructions {recon:.2f}x) -> {as_path(out) / PROBE_FILE}"
        )
