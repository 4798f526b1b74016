"""The beta trade-off of the KL autoencoder on the embedded digits, with and without KL warm-up.

    .venv/bin/python benchmarks/beta_sweep/sweep.py [--workdir runs/beta_sweep] [--steps 200]
        [--out runs/beta_sweep/figures]     # --out benchmarks/beta_sweep: the README's figures

The plots need matplotlib, part of the ``bench`` extra (``pip install -e '.[bench]'``; ``make
bench`` installs it).

Trains ``ae/digits.py`` (16 px digits, f = 4, 4 latent channels) once per
``loss.kl_weight`` in {0, 1e-6, 1e-4, 1e-2, 1}, once with the KL weight switched on at once
(``kl_warmup_steps=0``) and once ramped up linearly over the first half of the run (KL
annealing, Bowman et al. 2016). The PatchGAN is off (``disc_start`` past the end) so only beta
moves. Runs resume from their workdir, so a second call only evaluates.

On the held-out split it measures, through the posterior mean: the reconstruction error (MSE
per pixel on [-1, 1], and PSNR), the KL to the prior in nats per image (summed over the 4x4x4
latent), and the active units (Burda et al. 2015; ``latentjax/eval/latent_report.py``). It then
writes into ``--out`` (default: ``WORKDIR/figures``; the committed figures beside this script are
replaced only when ``--out`` names this folder):

- ``tradeoff.png``: reconstruction error against KL, one point per beta, both warm-up settings,
  and active units against beta;
- ``samples.png``: per run, reconstructions of held-out digits beside images decoded from
  z ~ N(0, I) -- at large beta the posterior collapses to the prior, so the reconstructions stop
  depending on the input (every digit decodes to the same blur) while prior samples and
  reconstructions look alike;
- ``results.json`` (written first: a failure while plotting loses no measurement) and a
  markdown table on stdout.

Loss scale (README, "Decisions"): L1 summed over pixels + beta * KL summed over latent
elements, so beta = 1 is an ELBO-like weight and 1e-6 is Stable Diffusion's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from latentjax.config import load_config
from latentjax.data.pipeline import split_arrays
from latentjax.eval import latent_report
from latentjax.eval.images import image_grid, to_uint8
from latentjax.parallel.mesh import make_mesh
from latentjax.run import Run
from latentjax.train.autoencoder import load_autoencoder
from latentjax.train.trainer import train

BETAS = (0.0, 1e-6, 1e-4, 1e-2, 1.0)


def run_name(beta: float, warmup: bool) -> str:
    return f"beta{beta:g}_{'warmup' if warmup else 'nowarmup'}"


def overrides(beta: float, warmup: bool, steps: int) -> list[str]:
    return [
        f"loss.kl_weight={beta}",
        f"loss.kl_warmup_steps={steps // 2 if warmup else 0}",
        f"loss.disc_start={10 * steps}",  # no GAN: only beta moves
        f"train.num_steps={steps}",
        f"train.eval_every={steps}",
        f"train.checkpoint_every={steps}",
        f"train.log_every={max(steps // 10, 1)}",
        f"optim.warmup_steps={min(20, steps)}",  # a short run: reach the full lr early
    ]


def evaluate(workdir: Path, mesh, images: np.ndarray, num_show: int, seed: int = 0) -> dict:
    """Held-out reconstruction error, KL and active units; reconstructions and prior samples."""
    stage, params = load_autoencoder(Run.open(workdir), mesh)
    ae = stage.ae
    encode = jax.jit(lambda p, x: ae.apply(p, x, method=ae.encode))
    decode = jax.jit(lambda p, z: ae.apply(p, z, method=ae.decode))
    posterior = encode(params, images)
    mean, logvar = np.asarray(posterior.mean), np.asarray(posterior.logvar)
    x_hat = np.clip(np.asarray(decode(params, jnp.asarray(mean))), -1.0, 1.0)
    mse = np.mean(np.square(x_hat - images), axis=(1, 2, 3))  # [N]
    kl_channel = latent_report.gaussian_kl_per_channel(mean, logvar)  # nats per element
    units = latent_report.active_units(mean)
    prior_z = jax.random.normal(jax.random.key(seed), (num_show, *mean.shape[1:]))
    prior = np.clip(np.asarray(decode(params, prior_z)), -1.0, 1.0)
    positions = mean.shape[1] * mean.shape[2]
    return {
        "mse": float(mse.mean()),
        "psnr": float(np.mean(10 * np.log10(4.0 / np.maximum(mse, 1e-10)))),
        "kl_per_image": float(kl_channel.sum() * positions),
        "kl_per_channel": kl_channel.tolist(),
        "active_units": units["count"],
        "units": units["total"],
        "posterior_std": float(np.exp(0.5 * logvar).mean()),
        "recon": to_uint8(x_hat[:num_show]),
        "prior": to_uint8(prior),
    }


def plot(results: list[dict], real: np.ndarray, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for warmup, marker in ((False, "o"), (True, "s")):
        rows = [r for r in results if r["warmup"] == warmup]
        label = "KL warm-up (first half)" if warmup else "no warm-up"
        ax.plot([r["kl_per_image"] for r in rows], [r["mse"] for r in rows], marker=marker,
                label=label)  # fmt: skip
        for r in rows:
            ax.annotate(f"β={r['beta']:g}", (r["kl_per_image"], r["mse"]), fontsize=8,
                        xytext=(4, 4 if warmup else -10), textcoords="offset points")  # fmt: skip
        betas = [max(r["beta"], 1e-8) for r in rows]
        ax2.plot(betas, [r["active_units"] for r in rows], marker=marker, label=label)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("KL(q(z|x) || N(0, I)) per image, nats (held-out)")
    ax.set_ylabel("reconstruction MSE per pixel on [-1, 1] (held-out)")
    ax.set_title("rate vs distortion across β")
    ax.legend()
    ax2.set_xscale("log")
    ax2.set_xlabel("β (β = 0 drawn at 1e-8)")
    ax2.set_ylabel(f"active units (of {results[0]['units']})")
    ax2.set_title("active units (Cov_x E_q[u] > 0.01)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png", dpi=110)
    plt.close(fig)

    # One row per run: reconstructions of held-out digits | decoded prior samples.
    n = real.shape[0]
    fig, axes = plt.subplots(len(results) + 1, 2, figsize=(9, 1.1 * (len(results) + 1)))
    blank = np.zeros_like(real)
    for row, (label, recon, prior) in enumerate(
        [("held-out digits", real, blank)]
        + [
            (
                f"β={r['beta']:g}, {'warm-up' if r['warmup'] else 'no warm-up'}, "
                f"AU {r['active_units']}",
                r["recon"],
                r["prior"],
            )  # fmt: skip
            for r in results
        ]
    ):
        for col, imgs in enumerate((recon, prior)):
            a = axes[row, col]
            a.imshow(image_grid(imgs, ncol=n)[..., 0], cmap="gray", vmin=0, vmax=255)
            a.set_xticks([])
            a.set_yticks([])
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    axes[0, 0].set_title("reconstruction (posterior mean)", fontsize=9)
    axes[0, 1].set_title("decoded from z ~ N(0, I)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/beta_sweep")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default=None, help="figures and results (default WORKDIR/figures)")
    parser.add_argument("--num-show", type=int, default=10)
    args = parser.parse_args()
    import absl.flags

    absl.flags.FLAGS.mark_as_parsed()

    root = Path(args.workdir)
    out = Path(args.out) if args.out else root / "figures"
    out.mkdir(parents=True, exist_ok=True)
    results, start = [], time.time()
    mesh = None
    for warmup in (False, True):
        for beta in BETAS:
            workdir = root / run_name(beta, warmup)
            config = load_config("ae/digits.py", overrides(beta, warmup, args.steps))
            t0 = time.time()
            train(config, workdir, progress=False)
            seconds = time.time() - t0
            mesh = mesh or make_mesh(config.mesh.shape)
            test = split_arrays(config.data, config.data.eval_split)["image"]
            r = evaluate(workdir, mesh, test, args.num_show)
            r.update(beta=beta, warmup=warmup, train_seconds=round(seconds, 1))
            results.append(r)
            print(
                f"{run_name(beta, warmup)}: mse {r['mse']:.4f} psnr {r['psnr']:.2f} "
                f"kl {r['kl_per_image']:.2f} AU {r['active_units']}/{r['units']} "
                f"({seconds:.0f} s)",
                flush=True,
            )
    table = [{k: v for k, v in r.items() if k not in ("recon", "prior")} for r in results]
    meta = {"steps": args.steps, "batch_size": config.train.batch_size,
            "total_seconds": round(time.time() - start, 1)}  # fmt: skip
    (out / "results.json").write_text(json.dumps({**meta, "runs": table}, indent=1) + "\n")
    plot(results, to_uint8(test[: args.num_show]), out)
    print("\n| beta | warm-up | MSE | PSNR dB | KL nats/image | active units | train s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in table:
        print(
            f"| {r['beta']:g} | {'yes' if r['warmup'] else 'no'} | {r['mse']:.4f} | "
            f"{r['psnr']:.2f} | {r['kl_per_image']:.2f} | {r['active_units']}/{r['units']} | "
            f"{r['train_seconds']} |"
        )
    print(f"total {meta['total_seconds']} s; wrote {out}/tradeoff.png, samples.png, results.json")


if __name__ == "__main__":
    main()
