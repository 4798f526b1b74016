"""EQ-VAE on the digits: what equivariance regularisation buys and costs.

    python -m benchmarks.eq_vae [--workdir runs/eq_vae] [--steps N] [--finetune-steps M]

Trains ``ae/digits.py`` (the baseline) and ``ae/digits_eq.py`` (EQ from scratch) for the same
steps, then fine-tunes the baseline with EQ for ``--finetune-steps`` (``init_from``; the
PatchGAN stays off in the fine-tune, whose fresh discriminator would start from scratch).
Runs resume from their workdirs, so a second call only evaluates. On the held-out split it
measures, through the posterior mode:

- ``psnr``: the plain reconstruction decode(z) against x (what EQ may cost);
- ``psnr_rot90``: decode(rot90(z)) against rot90(x);
- ``psnr_half``: decode(z down-scaled 2x) against x down-scaled 2x (bilinear, antialiased);

the last two are what EQ buys: how well the decoder's output follows a transformed latent.
Writes ``WORKDIR/eq_vae.json``, a markdown table, and ``WORKDIR/eq_vae.png`` (per run, rows:
originals; reconstructions; decode of the 2x down-scaled latent beside the 2x down-scaled
originals).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from latentjax.config import load_config
from latentjax.data.pipeline import split_arrays
from latentjax.eval.images import image_grid, save_png, to_uint8
from latentjax.eval.metrics import psnr
from latentjax.losses.autoencoder import equivariance_transform
from latentjax.parallel.mesh import make_mesh
from latentjax.run import Run
from latentjax.train.autoencoder import load_autoencoder
from latentjax.train.trainer import train


def evaluate(workdir: Path, config) -> tuple[dict, dict]:
    mesh = make_mesh(config.mesh.shape)
    stage, params = load_autoencoder(Run.open(workdir), mesh)
    ae = stage.ae
    x = jnp.asarray(split_arrays(config.data, config.data.eval_split)["image"])

    @functools.partial(jax.jit, static_argnums=2)  # the scale sets the shapes
    def through(params, x, scale, turns):
        z = ae.apply(params, x, method=ae.encode).mode()
        z = equivariance_transform(z, scale, turns)
        x_hat = jnp.clip(ae.apply(params, z, method=ae.decode), -1.0, 1.0)
        return x_hat, equivariance_transform(x, scale, turns)

    out, pictures = {}, {}
    for name, scale, turns in (("psnr", 1.0, 0), ("psnr_rot90", 1.0, 1), ("psnr_half", 0.5, 0)):
        x_hat, target = through(params, x, scale, jnp.int32(turns))
        out[name] = float(jnp.mean(psnr(target, x_hat)))
        pictures[name] = (np.asarray(target[:12]), np.asarray(x_hat[:12]))
    out["num_eval_images"] = int(x.shape[0])
    return out, pictures


def figure(pictures: dict[str, dict], path: Path, second: str = "psnr_half") -> None:
    """Rows: originals; the originals transformed as ``second`` names (2x down-scaled, or
    rotated: ``psnr_rot90``); then per run its reconstructions and its decodes of the latent
    transformed alike (half-size images in the top-left corner)."""

    def padded(small: np.ndarray, like: np.ndarray) -> np.ndarray:
        out = np.full_like(like, -1.0)
        out[:, : small.shape[1], : small.shape[2]] = small
        return out

    first = next(iter(pictures.values()))
    originals = first["psnr"][0]
    rows = [originals, padded(first[second][0], originals)]
    for pics in pictures.values():
        rows += [pics["psnr"][1], padded(pics[second][1], originals)]
    grid = image_grid(to_uint8(np.concatenate(rows)), ncol=originals.shape[0])
    save_png(path, grid, scale=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/eq_vae")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--finetune-steps", type=int, default=200)
    args = parser.parse_args()
    root = Path(args.workdir)
    disc_start = f"loss.disc_start={int(0.85 * args.steps)}"
    runs = {
        "baseline": ("ae/digits.py", [f"train.num_steps={args.steps}", disc_start]),
        "eq": ("ae/digits_eq.py", [f"train.num_steps={args.steps}", disc_start]),
        "baseline+eq_finetune": (
            "ae/digits_eq.py",
            [
                f"init_from={root / 'baseline'}",
                f"train.num_steps={args.finetune_steps}",
                f"loss.disc_start={args.finetune_steps + 1}",
                "optim.warmup_steps=10",
                f"train.eval_every={args.finetune_steps}",
                f"train.checkpoint_every={args.finetune_steps}",
            ],
        ),
    }
    results, pictures = {}, {}
    for name, (config_name, overrides) in runs.items():
        config = load_config(config_name, overrides)
        t = time.time()
        train(config, root / name, progress=False)
        results[name], pictures[name] = evaluate(root / name, config)
        results[name]["train_s"] = round(time.time() - t, 1)
        print(name, json.dumps(results[name]), flush=True)
    (root / "eq_vae.json").write_text(json.dumps(results, indent=2))
    figure(pictures, root / "eq_vae.png")
    print("\n| run | PSNR (dB) | PSNR rot90 (dB) | PSNR half-scale (dB) | train s |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['psnr']:.2f} | {r['psnr_rot90']:.2f} | {r['psnr_half']:.2f} | "
            f"{r['train_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
