"""Trains the digits autoencoder with each bottleneck and prints held-out PSNR / SSIM.

    python benchmarks/bottlenecks.py [--workdir runs/bottlenecks] [--only kl,vq] [--steps N]

Each bottleneck uses its config (``ae/digits.py`` for KL, ``digits_{ae,vq,fsq}.py``):
the same encoder/decoder (f = 4, 4 latent channels on 16 px digits: a tensor size reduction of
4) and the same schedule (1000 steps of batch 64, PatchGAN for the last 150). Runs resume from
their workdir, so a second call only evaluates. Prints a markdown table and writes
``WORKDIR/bottlenecks.json``.

PSNR is ``latentjax.eval.metrics.psnr`` on the reconstruction through the posterior mode
(quantised for VQ/FSQ), clipped to [-1, 1]. SSIM is ``latentjax.eval.metrics.ssim`` (Gaussian
window sigma 1.5, the population covariance, data range 2: the settings of Wang et al. 2004).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from latentjax.config import load_config
from latentjax.data.pipeline import split_arrays
from latentjax.eval.metrics import psnr
from latentjax.parallel.mesh import make_mesh
from latentjax.run import Run
from latentjax.train.autoencoder import load_autoencoder
from latentjax.train.trainer import train

CONFIGS = {
    "kl": "ae/digits.py",
    "ae": "ae/digits_ae.py",
    "vq": "ae/digits_vq.py",
    "fsq": "ae/digits_fsq.py",
}


def ssim_per_image(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM of each image pair, images in [-1, 1], [B, H, W, C] -> [B] (``latentjax.eval.metrics``,
    checked against scikit-image in tests/test_metrics.py)."""
    from latentjax.eval.metrics import ssim

    return np.asarray(ssim(x, y, data_range=2.0))


def tensor_reduction(config) -> float:
    m = config.model
    f = 2 ** (len(m.ch_mult) - 1)
    latent = (config.data.image_size // f) ** 2 * (m.embed_dim or m.z_channels)
    return config.data.image_size**2 * m.in_channels / latent


def evaluate(workdir: Path, config) -> dict:
    mesh = make_mesh(config.mesh.shape)
    stage, params = load_autoencoder(Run.open(workdir), mesh)
    images = split_arrays(config.data, config.data.eval_split)["image"]
    x = jax.numpy.asarray(images)
    x_hat, stats = jax.jit(stage.reconstruct_with_stats)(params, x)
    x_hat = np.asarray(x_hat)
    out = {
        "psnr_db": float(np.mean(np.asarray(psnr(x, x_hat)))),
        "ssim": float(np.mean(ssim_per_image(np.asarray(images), x_hat))),
        "reduction": tensor_reduction(config),
        "num_eval_images": len(images),
    }
    return {**out, **{k: float(v) for k, v in stats.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/bottlenecks")
    parser.add_argument("--only", default=",".join(CONFIGS))
    parser.add_argument("--steps", type=int, default=None, help="override train.num_steps")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for every run")
    args = parser.parse_args()
    root = Path(args.workdir)
    results = {}
    for name in args.only.split(","):
        overrides = list(args.overrides)
        if args.steps:
            overrides += [
                f"train.num_steps={args.steps}",
                f"loss.disc_start={int(0.85 * args.steps)}",
            ]
        config = load_config(CONFIGS[name], overrides)
        t = time.time()
        train(config, root / name, progress=False)
        train_s = time.time() - t
        results[name] = {**evaluate(root / name, config), "train_s": round(train_s, 1)}
        print(name, json.dumps(results[name]), flush=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / "bottlenecks.json").write_text(json.dumps(results, indent=2))

    print("\n| bottleneck | reduction | PSNR (dB) | SSIM | codebook usage | perplexity | train s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        usage = f"{r['codebook_usage']:.3f}" if "codebook_usage" in r else "-"
        ppl = f"{r['perplexity']:.1f}" if "perplexity" in r else "-"
        print(
            f"| {name} | {r['reduction']:g} | {r['psnr_db']:.2f} | {r['ssim']:.4f} | {usage} | "
            f"{ppl} | {r['train_s']:.0f} |"
        )
    if "kl" in results:
        base = results["kl"]["psnr_db"]
        print(
            "\nPSNR relative to KL (dB): "
            + ", ".join(f"{n} {r['psnr_db'] - base:+.2f}" for n, r in results.items())
        )


if __name__ == "__main__":
    main()
