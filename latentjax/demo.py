"""``latentjax demo``: both stages on the embedded digits, then a class-conditional sample grid.

Trains the autoencoder (configs/ae/digits.py) and the DiT (configs/dit/digits.py) into
``WORKDIR/ae`` and ``WORKDIR/dit`` (resuming if they exist), samples 100 images of each class
(10 with ``--quick``), and writes ``WORKDIR/samples.npz`` (all of them), ``WORKDIR/samples.png``
(10 per class, row k for digit k) and ``WORKDIR/summary.json``, where a classifier trained on the
real training split judges the samples beside its accuracy on the real test split.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from latentjax.config import load_config
from latentjax.eval.digits_classifier import DigitsClassifier
from latentjax.eval.images import to_uint8
from latentjax.train.main import describe_devices, split_arrays, train

# A few steps of each stage: exercises every part, makes no claim about quality.
QUICK = {
    "ae": [
        "train.num_steps=4",
        "train.log_every=2",
        "train.eval_every=4",
        "train.checkpoint_every=4",
        "loss.disc_start=2",
        "train.batch_size=16",
    ],
    "dit": [
        "train.num_steps=4",
        "train.log_every=2",
        "train.checkpoint_every=4",
        "train.batch_size=16",
        "sample.num_steps=2",
        "data.latent_stats_batches=1",
    ],
}


def _last(path: Path, key: str):
    values = [json.loads(line).get(key) for line in path.read_text().splitlines() if line]
    values = [v for v in values if v is not None]
    return values[-1] if values else None


def run_demo(workdir: str | Path, quick: bool = False) -> dict:
    from latentjax.cli import collect_samples, write_samples
    from latentjax.generate import load_generator
    from latentjax.parallel.mesh import make_mesh

    workdir = Path(workdir)
    times = {}
    print(f"latentjax demo on {describe_devices()} -> {workdir}")

    ae_config = load_config("ae/digits.py", QUICK["ae"] if quick else [])
    t = time.time()
    train(ae_config, workdir / "ae")
    times["ae_train_s"] = time.time() - t

    dit_config = load_config(
        "dit/digits.py", [f"ae_workdir={workdir / 'ae'}", *(QUICK["dit"] if quick else [])]
    )
    t = time.time()
    train(dit_config, workdir / "dit")
    times["dit_train_s"] = time.time() - t

    t = time.time()
    generator = load_generator(workdir / "dit", make_mesh(dit_config.mesh.shape))
    # 100 samples per digit are judged by the classifier (10 per digit with --quick); the grid
    # shows the first 10 of each, row k for digit k.
    per_class = 10 if quick else 100
    labels = np.repeat(np.arange(10, dtype=np.int32), per_class)
    images = collect_samples(generator, labels, dit_config)
    shown = images.reshape(10, per_class, *images.shape[1:])[:, :10].reshape(-1, *images.shape[1:])
    grid = write_samples(workdir / "samples.npz", images, labels, grid=shown)
    times["sample_s"] = time.time() - t

    train_split = split_arrays(ae_config, ae_config.data.train_split)
    test_split = split_arrays(ae_config, ae_config.data.eval_split)
    classifier = DigitsClassifier(to_uint8(train_split["image"]), train_split["label"])
    stats = json.loads((workdir / "dit" / "latent_stats.json").read_text())
    summary = {
        "ae_test_psnr_db": _last(workdir / "ae" / "metrics.jsonl", "test_psnr"),
        "ae_tensor_reduction": _reduction(ae_config),
        "latent_scale": stats["scale"],
        "latent_shift": stats["shift"],
        "dit_final_loss": _last(workdir / "dit" / "metrics.jsonl", "loss"),
        "classifier_acc_real_test": classifier.accuracy(
            to_uint8(test_split["image"]), test_split["label"]
        ),
        "classifier_acc_samples": classifier.accuracy(images, labels),
        "num_samples_judged": len(labels),
        **{k: round(v, 1) for k, v in times.items()},
        "grid": str(grid),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\nlatentjax demo summary")
    for k, v in summary.items():
        print(f"  {k:28s} {v:.4g}" if isinstance(v, float) else f"  {k:28s} {v}")
    return summary


def _reduction(config) -> float:
    m = config.model
    f = 2 ** (len(m.ch_mult) - 1)
    latent = (config.data.image_size // f) ** 2 * (m.embed_dim or m.z_channels)
    return config.data.image_size**2 * m.in_channels / latent
