"""What the 3-D PatchGAN costs beside the per-frame one, on the video demo's clips.

    python -m benchmarks.video_disc [--repeats 20] [--out benchmarks/video/disc_cost.json]

``ae/digits_video.py``'s discriminator settings and batch (8 clips of 9 frames, 16 x 16 x 1),
two ways: the 2-D PatchGAN on the 72 frames as images (the default) and the 3-D PatchGAN
(``loss.disc_temporal_kernel=3``) on the 8 clips. Each row times, in turns with the other
(``benchmarks.timing.interleaved``), what a training step asks of the discriminator: the
gradient of its hinge loss on real and fake inputs with respect to its parameters, plus the
gradient of the generator's adversarial term with respect to the fake input. CPU figures are
relative: the ratio is the point. Writes the JSON and a markdown table on stdout.

Measured 2026-12-02 on the 2-core CPU: 13.2x with the 3-D PatchGAN built from ``nn.Conv`` in
3-D, 3.0x once its convolutions were computed per kernel frame
(``latentjax.models.layers.conv_over_frames``); the JSON holds the second.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks.timing import interleaved, report
from latentjax.config import load_config
from latentjax.factory import build_discriminator


def step(disc):
    def hinge(params, real, fake):
        return 0.5 * (
            jnp.mean(jax.nn.relu(1.0 - disc.apply(params, real)))
            + jnp.mean(jax.nn.relu(1.0 + disc.apply(params, fake)))
        )

    @jax.jit
    def run(params, real, fake):
        d_grads = jax.grad(hinge)(params, real, fake)
        g_input = jax.grad(lambda f: -jnp.mean(disc.apply(params, f)))(fake)
        return d_grads, g_input

    return run


def timing_args(doc: str, repeats: int, out: str) -> argparse.Namespace:
    """The command line of the video cost benchmarks: ``--repeats`` and ``--out``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--out", default=out)
    return parser.parse_args()


def demo_clips(count: int):
    """``ae/digits_video.py``'s config and ``count`` batches of its size (clips of 9 frames,
    uniform in [-1, 1]) -> (config, float32 [count, B, 9, S, S, 1])."""
    config = load_config("ae/digits_video.py")
    s, b = config.data.image_size, config.train.batch_size
    shape = (count, b, 9, s, s, 1)
    return config, jax.random.uniform(jax.random.key(0), shape, minval=-1.0, maxval=1.0)


def main() -> None:
    args = timing_args(__doc__, 20, "benchmarks/video/disc_cost.json")
    config, (real, fake) = demo_clips(2)
    frames = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
    fns, shapes = {}, {}
    for name, k, judge in (("2-D, every frame", 0, frames), ("3-D, whole clips", 3, lambda x: x)):
        config.loss.disc_temporal_kernel = k
        disc = build_discriminator(config.loss)
        params = disc.init(jax.random.key(1), judge(real))
        run = step(disc)
        inputs = (judge(real), judge(fake))
        fns[name] = lambda run=run, params=params, inputs=inputs: run(params, *inputs)
        shapes[name] = {
            "logits": list(jax.eval_shape(disc.apply, params, judge(real)).shape),
            "parameters": sum(a.size for a in jax.tree.leaves(params)),
        }
    seconds = interleaved(fns, args.repeats)
    base = seconds["2-D, every frame"]
    rows = {n: {**shapes[n], "seconds": seconds[n], "ratio": seconds[n] / base} for n in fns}
    report(
        args.out,
        real.shape,
        rows,
        ("PatchGAN", "logits", "parameters", "s / discriminator step", "x the 2-D one"),
        lambda name, r: (
            name,
            " x ".join(map(str, r["logits"])),
            f"{r['parameters']:,}",
            f"{r['seconds']:.4f}",
            f"{r['ratio']:.2f}",
        ),
    )


if __name__ == "__main__":
    main()
