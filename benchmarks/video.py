"""Frame by frame vs causal 3-D: the comparison the video autoencoders argue from, on the
embedded moving digits, at the same tensor size reduction.

    python -m benchmarks.video [--steps N] [--size S] [--batch B] [--data digits|pans]
        [--out benchmarks/video]

Trains, from the same seed and on the same clips (``latentjax_moving_digits``, frames resized to
``--size`` px), for the same number of steps with the same recipe (``ae/digits.py``'s L1 + KL
with warm-up, Adam with warm-up; the PatchGAN off for both, so neither gets an adversary the
other lacks):

- **frame by frame**: the image autoencoder (``model.family="kl"``, f = 4, 2 latent channels)
  on the clips' frames, every frame of a batch of clips as one batch of images;
- **causal 3-D**: ``ae/digits_video.py``'s autoencoder with Wan's compression (x4 time, x4
  space; the demo's config compresses x2 and x2) and 6 latent channels.

9 frames of S x S x 1 become 9 x (S/4)^2 x 2 numbers one way and 3 x (S/4)^2 x 6 the other: a
tensor size reduction of 8 for both. On the 296 held-out clips, through the posterior mean, it
measures per-frame PSNR and SSIM, flicker (``latentjax/eval/video.py``: the error of the frame
differences) and reports the train step time. Writes ``OUT/video.json``, a markdown table on
stdout and ``OUT/frames.png`` (per clip: originals, frame-by-frame, causal 3-D reconstructions).
``--data pans`` makes the same comparison on the photo pans (``latentjax_photo_pans``: camera
pans and zooms over photographs, RGB; both autoencoders then take 3 channels).
The steps run in this script (the image model trains on frames, which no dataset holds); the
trainer's own path for the video model is ``latentjax train --config ae/digits_video.py``.
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
from latentjax.data import moving_digits, photo_pans
from latentjax.data.pipeline import load_source, make_dataset, make_iterator, split_arrays
from latentjax.eval import video
from latentjax.eval.images import image_grid, save_png, to_uint8
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import autoencoder as ae_train
from latentjax.train import state as state_lib

DATASETS = {  # --data: (tfds name, builder, channels)
    "digits": (moving_digits.NAME, moving_digits.prepare_moving_digits, 1),
    "pans": (photo_pans.NAME, photo_pans.prepare_photo_pans, 3),
}


def configs(size: int, steps: int, data: str = "digits"):
    """(frame-by-frame config, causal 3-D config), equal in everything but the network."""
    name, _, channels = DATASETS[data]
    common = [
        f"data.name={name}",
        f"model.in_channels={channels}",
        f"data.image_size={size}",
        f"train.num_steps={steps}",
        f"loss.disc_start={steps + 1}",  # no adversary for either
        "loss.kl_warmup_steps=" + str(max(1, steps // 6)),
        "optim.warmup_steps=" + str(max(1, steps // 12)),
    ]
    image = load_config(
        "ae/digits.py",
        [*common, "model.ch_mult=(1, 2, 2)", "model.z_channels=2", "model.embed_dim=2"],
    )
    wan = ["model.ch_mult=(1, 2, 2)", "model.temporal_downsample=(True, True)"]  # x4, x4
    clip = load_config("ae/digits_video.py", [*common, *wan, "model.z_channels=6"])
    return image, clip


def train(config, batches, steps: int, as_frames: bool):
    """-> (autoencoder parameters, median step time in s after the first)."""
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    task = ae_train.make_task(config, mesh)
    stage = task.train_steps["reconstruction"].__self__
    rules = tuple(tuple(r) for r in config.mesh.rules)
    _, shardings, init = state_lib.build_state(task.init_state, mesh, rules, jax.random.key(0))
    step = state_lib.jit_steps(task, shardings, mesh)["reconstruction"]
    state, times = init(jax.random.key(config.seed)), []
    with mesh_lib.activation_rules(mesh, rules):
        for n in range(steps):
            clips = jnp.asarray(next(batches)["video"])
            batch = {"image": video.frames(clips)} if as_frames else {"video": clips}
            t = time.perf_counter()
            state, metrics = step(state, task.frozen, batch, jax.random.key(1))
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t)
            if n % max(1, steps // 10) == 0 or n == steps - 1:
                print(f"  step {n + 1}: nll {float(metrics['nll']):.2f} ({times[-1]:.2f} s)")
    return stage, state["params"]["ae"], float(np.median(times[1:] or times))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--size", type=int, default=16, help="frame side after resizing (px)")
    p.add_argument("--batch", type=int, default=4, help="clips per step")
    p.add_argument("--show", type=int, default=3, help="clips in the frame strip")
    p.add_argument("--data", default="digits", choices=sorted(DATASETS))
    p.add_argument("--out", default="benchmarks/video")
    args = p.parse_args(argv)
    image_config, clip_config = configs(args.size, args.steps, args.data)
    dataset_name, prepare, channels = DATASETS[args.data]
    source = load_source(dataset_name, "train", prepare())
    x = split_arrays(clip_config.data, "test")["video"]  # [N, T, S, S, 1]
    out, results, recon = Path(args.out), {}, {}
    for name, config, as_frames in (
        ("frame by frame", image_config, True),
        ("causal 3-D", clip_config, False),
    ):
        print(name)
        dataset = make_dataset(
            source, global_batch_size=args.batch, image_size=args.size, seed=0,
            process_index=0, process_count=1,
        )  # fmt: skip
        stage, params, step_s = train(config, make_iterator(dataset), args.steps, as_frames)
        if as_frames:
            y = jax.jit(stage.reconstruct)(params, video.frames(x)).reshape(x.shape)
            z = jax.jit(stage.encode_latents)(params, video.frames(x[:1]))  # [T, h, w, c]
        else:
            y = jax.jit(stage.reconstruct)(params, x)
            z = jax.jit(stage.encode_latents)(params, x[:1])[0]  # [t, h, w, c]
        recon[name] = np.asarray(y)
        results[name] = {**video.video_report(x, y, z.shape), "step_s": step_s}
    report = {"data": dataset_name, "steps": args.steps, "size": args.size,
              "batch_clips": args.batch, "test_clips": len(x), "results": results}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "video.json").write_text(json.dumps(report, indent=2) + "\n")
    n = min(args.show, len(x))
    rows = np.stack([x[:n], *(recon[k][:n] for k in results)], axis=1)  # [n, 3, T, S, S, 1]
    tiles = to_uint8(rows.reshape(-1, *x.shape[2:]))
    tiles = np.repeat(tiles, 3, axis=-1) if channels == 1 else tiles
    save_png(out / "frames.png", image_grid(tiles, ncol=x.shape[1]), scale=4)
    print("| autoencoder | size reduction | PSNR (dB) | SSIM | flicker | s / step |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, r in results.items():
        print(f"| {k} | {r['size_reduction']:g} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
              f"{r['flicker']:.4f} | {r['step_s']:.2f} |")  # fmt: skip
    return report


if __name__ == "__main__":
    main()
