"""``latentjax demo``: both stages on the embedded digits, then judged samples."""

from __future__ import annotations

from latentjax.commands.common import add_distributed_args, add_parser


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "demo",
        "both stages on the embedded digits, then a sample grid and a summary",
        "latentjax demo --workdir runs/demo",
    )
    p.add_argument("--workdir", default=None, help="default runs/demo (runs/demo_video)")
    p.add_argument(
        "--quick", action="store_true", help="a few steps only (checks the pipeline, not quality)"
    )
    p.add_argument(
        "--video",
        action="store_true",
        help="both video stages on the embedded moving digits, then clips judged per frame "
        "and by their motion",
    )
    add_distributed_args(p)
    p.set_defaults(run=run)


def run(args) -> None:
    from latentjax.demo import run_demo
    from latentjax.parallel.distributed import describe_devices

    if args.video:
        return run_video(args)
    args.workdir = args.workdir or "runs/demo"
    print(f"latentjax demo on {describe_devices()} -> {args.workdir}")
    summary = run_demo(args.workdir, quick=args.quick)
    print("\nlatentjax demo summary")
    for k, v in summary.items():
        if k != "distribution":
            print(f"  {k:28s} {v:.4g}" if isinstance(v, float) else f"  {k:28s} {v}")
    print(distribution_table(summary["distribution"], summary["cfg_scale"]))
    if args.quick:
        print(
            "latentjax: --quick trains each stage for 4 steps: it checks that the pipeline runs; "
            "its samples are not expected to look like digits (run without --quick for that)"
        )


def distribution_table(judged: dict, cfg_scale: float) -> str:
    """The samples beside real-vs-real and the reconstructions, a row each."""
    columns = [
        ("recognised", "recognised"),
        ("frechet_ratio", "Fréchet/real"),
        ("precision", "precision"),
        ("recall", "recall"),
        ("class_variance_ratio", "within-class var"),
    ]
    rows = [
        ("real, held out", judged["real_heldout"]),
        ("real test split", judged["real_test"]),
        ("reconstructions", judged["recon"]),
        (f"samples (cfg {cfg_scale:g})", judged["samples"]),
    ]
    lines = [
        "  judged as a distribution (digits feature space; Fréchet as a multiple of real-vs-real)",
        "    " + " " * 20 + "".join(f"{title:>18s}" for _, title in columns),
    ]
    for name, figures in rows:
        lines.append(f"    {name:20s}" + "".join(f"{figures[k]:18.3f}" for k, _ in columns))
    return "\n".join(lines)


def run_video(args) -> None:
    from latentjax.demo import run_video_demo
    from latentjax.parallel.distributed import describe_devices

    workdir = args.workdir or "runs/demo_video"
    print(f"latentjax demo --video on {describe_devices()} -> {workdir}")
    s = run_video_demo(workdir, quick=args.quick)
    m, d = s["motion_samples"], s["diversity_samples"]
    print(
        f"latentjax: {s['num_clips_judged']} clips of {s['clip_shape'][0]} frames; the digit "
        f"asked for recognised in {s['recognised_per_frame_samples']:.1%} of frames (real "
        f"held-out clips {s['recognised_per_frame_real_test']:.1%}, reconstructions "
        f"{s['recognised_per_frame_recon']:.1%}); speed {m['samples_speed']:.2f} px/frame "
        f"(real {m['real_speed']:.2f}), acceleration {m['samples_acceleration']:.2f} (real "
        f"{m['real_acceleration']:.2f}); variety against real clips: glyphs "
        f"{d['shape_variance_ratio']:.2f}x, velocities {d['velocity_variance_ratio']:.2f}x "
        f"-> {workdir}/summary.json"
    )
    if args.quick:
        print(
            "latentjax: --quick trains each stage for 2 steps of a smaller model: it checks "
            "that the pipeline runs, not what the clips look like"
        )
