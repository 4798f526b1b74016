"""How much of a Fréchet distance in the digits' feature space is faint background haze (issue 19).

    python benchmarks/guidance/haze.py runs/demo benchmarks/guidance/haze.json

The digits are black (0) around the glyph; a decoder leaves a faint grey there (a few 255ths).
The digits' feature space standardises pixels whose real spread is small, so such haze can
move the distance though no one could see it. This measures it three ways, each as the Fréchet
ratio to real-vs-real (``distribution.report``, the demo's chunks): the real test digits with
``H``/255 added to every black pixel (what haze alone does to real images), and the demo's
reconstructions (``DEMO/ae``) and samples (``DEMO/samples.npz``) with every value below ``T``/255
set to 0 (how much of their distance the haze is).

``haze.json`` was measured in the digits feature space v1, which read such haze strongly, with
the test split as real-vs-real and the test split's reconstructions; v2 (2026-12-03)
soft-thresholds pixels at half a grey level (``benchmarks/digits_judge.py`` compares the two),
and ``distribution.report`` now takes random chunks of the training split as real-vs-real and
their reconstructions as the ceiling. Run now, this script measures both changes.
"""

import json
import sys

import numpy as np

from latentjax.eval import distribution as dist
from latentjax.eval import generation
from latentjax.eval.autoencoder import reconstruct
from latentjax.eval.images import to_uint8
from latentjax.parallel.mesh import make_mesh
from latentjax.run import Run
from latentjax.train.autoencoder import load_autoencoder

HAZES = (1, 2, 4)
THRESHOLDS = (4, 8)


def demo_sets(demo: str) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """A ``latentjax demo`` run's real splits (``generation.real_sets``), its autoencoder's
    reconstructions of the training split (uint8; ``distribution.report`` judges those of its
    held-out chunks), and its samples with the labels asked for."""
    ae_run = Run.open(f"{demo}/ae")
    real = generation.real_sets(ae_run.config.data)
    train = real["train_images"]
    stage, params = load_autoencoder(ae_run, make_mesh(ae_run.config.mesh.shape))
    recon = to_uint8(reconstruct(stage.ae, params, train.astype(np.float32) / 127.5 - 1.0, 128))
    with np.load(f"{demo}/samples.npz", allow_pickle=False) as f:
        return real, recon, f["images"], f["labels"]


def main(demo: str, out: str) -> None:
    real, recon, samples, labels = demo_sets(demo)
    test, test_labels = real["test_images"], real["test_labels"]

    def judged(images, asked, reconstructions=None):
        return dist.report(
            real["train_images"], real["train_labels"], test, test_labels, images, asked,
            train_reconstructions=reconstructions,
        )  # fmt: skip

    def ratio(images, asked):
        return judged(images, asked)["samples_frechet_ratio"]

    def floored(images, threshold):
        images = images.copy()
        images[images < threshold] = 0
        return images

    rows = {}
    for h in HAZES:
        hazy = test.copy()
        hazy[hazy == 0] = h
        rows[f"real test digits, black pixels set to {h}/255"] = ratio(hazy, test_labels)
    for name, threshold in (
        ("", 0),
        *((f", values below {t}/255 set to 0", t) for t in THRESHOLDS),
    ):
        figures = judged(floored(samples, threshold), labels, floored(recon, threshold))
        rows[f"reconstructions{name}"] = figures["recon_frechet_ratio"]
        rows[f"samples{name}"] = figures["samples_frechet_ratio"]
    background = real["train_images"] == 0
    rows["reconstructions: mean value where the real digit is black (/255)"] = float(
        recon[background].mean()
    )
    with open(out, "w") as f:
        json.dump(rows, f, indent=2)
    print("| images | Fréchet / real-vs-real |\n| --- | --- |")
    for name, value in rows.items():
        print(f"| {name} | {value:.2f} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
