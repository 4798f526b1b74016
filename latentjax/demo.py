"""``latentjax demo``: both stages on the embedded digits, then a class-conditional sample grid
(``--video``: both video stages on the embedded moving digits, then judged clips).

Trains the autoencoder (built-in ``ae/digits_demo.py``) and the DiT (``dit/digits_demo.py``) into
``WORKDIR/ae`` and ``WORKDIR/dit`` (resuming if they exist), samples 100 images of each class
(10 with ``--quick``), and writes ``WORKDIR/samples.npz`` (all of them), ``WORKDIR/samples.png``
(10 per class, row k for digit k) and ``WORKDIR/summary.json``. The summary judges the samples
from both sides (``latentjax/eval/generation.py``): fidelity, as the share a classifier trained on
the real training split recognises as the digit asked for, and the distribution, as a Fréchet
distance in the digits' fixed feature space, precision, recall and within-class variance; each
beside the same figure for real digits held out of the training split (real-vs-real), for the
real test split and for the autoencoder's reconstructions of the held-out digits (the ceiling
stage 2 can reach). A stage that was already trained is not
trained again, and the summary keeps the training time it took then.
"""

from __future__ import annotations

import math
import time

import numpy as np

from latentjax.config import load_builtin
from latentjax.eval import generation
from latentjax.eval.autoencoder import reconstruct
from latentjax.eval.digits_classifier import DigitsClassifier
from latentjax.eval.digits_features import digits_features
from latentjax.eval.images import to_uint8
from latentjax.factory import latent_shape
from latentjax.generate import (
    collect_samples,
    load_generator,
    save_animation,
    save_frames,
    spec_from_config,
    write_samples,
)
from latentjax.parallel.mesh import make_mesh
from latentjax.paths import Path, as_path
from latentjax.run import Run, read_json, write_json
from latentjax.train.loop import read_metrics
from latentjax.train.trainer import check_finished, train

# A few steps of each stage: exercises every part, makes no claim about quality.
QUICK_VIDEO = {
    "ae": [
        "train.num_steps=2",
        "train.log_every=1",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        "loss.disc_start=1",
        "model.ch=8",
        "model.ch_mult=(1, 2)",
        "model.temporal_downsample=(True,)",
    ],
    "dit": [
        "train.num_steps=2",
        "train.log_every=1",
        "train.checkpoint_every=2",
        "train.batch_size=8",
        "train.eval_images=0",
        "model.hidden_size=32",
        "model.depth=2",
        "model.patch_size=2",
        "sample.num_steps=2",
        "data.latent_stats_batches=1",
    ],
}
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


def _last(run: Run, key: str):
    """The last value of ``key`` logged in the run's metrics.jsonl."""
    values = [r[key] for r in read_metrics(run.metrics_path) if r.get(key) is not None]
    return values[-1] if values else None


def _trained(workdir: Path, config, name: str, earlier: dict, times: dict) -> None:
    """Trains ``config`` into ``workdir``; records the time in ``times[name]``, or, when the
    run was complete already (nothing to train), the time an earlier summary recorded."""
    done = (workdir / "metrics.jsonl").exists() and any(
        r["step"] >= config.train.num_steps for r in read_metrics(workdir / "metrics.jsonl")
    )
    t = time.time()
    check_finished(train(config, workdir), config, workdir)
    times[name] = earlier.get(name) if done and name in earlier else time.time() - t


def run_demo(workdir: str | Path, quick: bool = False) -> dict:
    """Runs the demo into ``workdir`` (resuming what is there); -> the summary it wrote."""
    workdir = as_path(workdir)
    times: dict = {}
    summary_file = workdir / "summary.json"
    earlier = read_json(summary_file) if summary_file.exists() else {}

    ae_config = load_builtin("ae/digits_demo.py", QUICK["ae"] if quick else [])
    _trained(workdir / "ae", ae_config, "ae_train_s", earlier, times)

    dit_config = load_builtin(
        "dit/digits_demo.py", [f"ae_workdir={workdir / 'ae'}", *(QUICK["dit"] if quick else [])]
    )
    _trained(workdir / "dit", dit_config, "dit_train_s", earlier, times)

    t = time.time()
    generator = load_generator(workdir / "dit", make_mesh(dit_config.mesh.shape))
    # 100 samples per digit are judged by the classifier (10 per digit with --quick); the grid
    # shows the first 10 of each, row k for digit k.
    per_class = 10 if quick else 100
    labels = np.repeat(np.arange(10, dtype=np.int32), per_class)
    spec = spec_from_config(dit_config)
    images = collect_samples(generator, labels, spec, dit_config.sample.batch_size)
    shown = images.reshape(10, per_class, *images.shape[1:])[:, :10].reshape(-1, *images.shape[1:])
    grid = write_samples(workdir / "samples.npz", images, labels, grid=shown)
    times["sample_s"] = time.time() - t

    real, recon = generation.references(dit_config.data, generator, dit_config.sample.batch_size)
    judged = generation.judge(
        real,
        images,
        labels,
        recon,
        features=digits_features,
        classifier=DigitsClassifier,
    )
    ae_run, dit_run = Run.open(workdir / "ae"), Run.open(workdir / "dit")
    stats = dit_run.latent_stats()
    image_size = ae_config.data.image_size
    summary = {
        "ae_test_psnr_db": _last(ae_run, "test_psnr"),
        "ae_tensor_reduction": (
            image_size**2 * ae_config.model.in_channels / math.prod(latent_shape(ae_config))
        ),
        "latent_scale": stats["scale"],
        "latent_shift": stats["shift"],
        "dit_final_loss": _last(dit_run, "loss"),
        "classifier_acc_real_test": judged["real_test"]["recognised"],
        "classifier_acc_samples": judged["samples"]["recognised"],
        "num_samples_judged": len(labels),
        "cfg_scale": spec.cfg_scale,
        # The distribution figures of the samples, real digits held out of training (the
        # reference), the real test split and the reconstructions (eval/generation.py; a
        # Fréchet ratio of 1 is as close as training digits held out at random).
        "distribution": judged,
        **{k: round(v, 1) for k, v in times.items()},
        "grid": str(grid.relative_to(workdir)),  # beside this file, wherever the run moves
        # --quick trains a few steps: its samples are not expected to look like digits.
        "quick": quick,
    }
    write_json(workdir / "summary.json", summary)
    return summary


def run_video_demo(workdir: str | Path, quick: bool = False) -> dict:
    """Both video stages on the moving digits into ``workdir`` (``video_ae``:
    ``ae/digits_video.py``; ``video_dit``: ``dit/digits_video.py``; resuming what is there),
    then 10 clips of each digit (2 with ``--quick``) judged per frame and by their motion
    (``latentjax/eval/motion.py``), beside the real held-out clips and the autoencoder's
    reconstructions of them. Writes ``samples.npz`` (``videos``, ``labels``), ``samples.gif``
    and ``samples.png`` (the first clip of each digit) and ``summary.json``; -> the summary."""
    workdir = as_path(workdir)
    times: dict = {}
    summary_file = workdir / "summary.json"
    earlier = read_json(summary_file) if summary_file.exists() else {}
    ae_config = load_builtin("ae/digits_video.py", QUICK_VIDEO["ae"] if quick else [])
    _trained(workdir / "video_ae", ae_config, "ae_train_s", earlier, times)
    cache = _latent_cache(workdir / "video_ae", workdir / "video_latents", earlier, times)
    dit_config = load_builtin(
        "dit/digits_video.py",
        [
            f"ae_workdir={workdir / 'video_ae'}",
            f"data.latent_cache={cache}",
            *(QUICK_VIDEO["dit"] if quick else []),
        ],
    )
    _trained(workdir / "video_dit", dit_config, "dit_train_s", earlier, times)

    summary = judge_video_run(workdir / "video_dit", workdir, 2 if quick else 10, times)
    summary["ae_test_psnr_db"] = _last(Run.open(workdir / "video_ae"), "test_psnr")
    summary["quick"] = quick
    write_json(summary_file, summary)
    return summary


def _latent_cache(ae_workdir: Path, out: Path, earlier: dict, times: dict) -> Path:
    """The training clips encoded once by the finished autoencoder in ``ae_workdir`` into the
    latent cache ``out`` (``latentjax encode``): stage 2 then reads the posterior's mean and std
    and draws its latents from them each step, as encoding in the step would, at 1.3-1.5x the
    step rate on this CPU. A complete cache of the run's present weights is reused (the demo
    resumes); one cut short (no info file) or of other weights is encoded again. -> ``out``;
    ``times["encode_s"]``."""
    from latentjax.data import latents
    from latentjax.train.latent_cache import encode_run

    t = time.time()
    if any((out / latents.DEFAULT_NAME).glob(f"*/{latents.CACHE_INFO}")):
        info, ae = latents.read_cache_info(str(out)), Run.open(ae_workdir)
        if (info.get("ae_run_id"), info.get("ae_step")) == (ae.id, ae.weights_step):
            if "encode_s" in earlier:
                times["encode_s"] = earlier["encode_s"]
            return out
    if out.exists():
        out.rmtree()
    encode_run(ae_workdir, out=str(out))
    times["encode_s"] = time.time() - t
    return out


def judge_video_run(dit_workdir: Path, out: Path, per_class: int, times: dict) -> dict:
    """Samples ``per_class`` clips of each digit from the video stage-2 run ``dit_workdir`` and
    judges them (``run_video_demo``); writes the samples into ``out`` -> the summary's figures
    (``times`` gains ``sample_s``)."""
    from latentjax.data import moving_digits
    from latentjax.data.pipeline import split_arrays
    from latentjax.eval import motion

    t = time.time()
    dit_run = Run.open(dit_workdir, stage="dit")
    config = dit_run.config
    generator = load_generator(dit_workdir, make_mesh(config.mesh.shape))
    labels = np.repeat(np.arange(10, dtype=np.int32), per_class)
    spec = spec_from_config(config)
    clips = collect_samples(generator, labels, spec, config.sample.batch_size)
    first = clips[::per_class]  # the first clip of each digit
    write_samples(out / "samples.npz", clips, labels)
    save_frames(out / "samples.png", first)
    save_animation(out / "samples.gif", first)
    times["sample_s"] = time.time() - t

    data = config.data
    train, test = split_arrays(data, data.train_split), split_arrays(data, data.eval_split)
    real = to_uint8(np.asarray(test["video"]))
    real_labels = np.asarray(test["label"])
    glyph = data.image_size * moving_digits.GLYPH // moving_digits.CANVAS
    judge = motion.FrameClassifier(to_uint8(np.asarray(train["video"])), train["label"], glyph)
    recon = to_uint8(reconstruct(generator.stage.ae, generator.frozen["ae"], real / 127.5 - 1.0, 8))
    recognised = judge.recognised(clips, labels)
    return {
        "dit_final_loss": _last(dit_run, "loss"),
        "clip_shape": list(clips.shape[1:]),
        "num_clips_judged": len(labels),
        "cfg_scale": spec.cfg_scale,
        # Per-frame recognition of the digit asked for: samples, and the ceilings (real
        # held-out clips, the autoencoder's reconstructions of them).
        "recognised_per_frame_samples": float(recognised.mean()),
        "recognised_by_frame_samples": recognised.mean(axis=0).tolist(),
        "recognised_per_frame_real_test": judge.accuracy(real, real_labels),
        "recognised_per_frame_recon": judge.accuracy(recon, real_labels),
        # Motion of the centre of mass (px per frame), samples and reconstructions each
        # beside the real held-out clips.
        "motion_samples": motion.motion_report(real, clips),
        "motion_recon": motion.motion_report(real, recon),
        # How varied the clips are (glyphs within each digit, velocities), as ratios to real
        # held-out clips': guidance trades this for recognition.
        "diversity_samples": motion.diversity_report(real, real_labels, clips, labels, glyph),
        "diversity_recon": motion.diversity_report(real, real_labels, recon, real_labels, glyph),
        **{k: round(v, 1) for k, v in times.items()},
    }
