"""A video autoencoder's chunks as a loop or unrolled: what a train step's gradient costs.

    python -m benchmarks.video_scan [--repeats 10] [--out benchmarks/video/scan_cost.json]

``ae/digits_video.py``'s autoencoder and batch (8 clips of 9 frames, 16 x 16 x 1: frame 0, then
four chunks of 2 frames), built twice from the same parameters: ``model.unroll_chunks=False``
(the chunks as one ``lax.scan``, a loop in the program) and ``True`` (one copy of the chunk step
per chunk). Each row times, in turns with the others (``benchmarks.timing.interleaved``), the
reconstruction's forward pass and the gradient of its L1 loss with respect to the parameters,
for Wan's chunks of one latent frame and for all the chunks in one (``chunk_latent_frames=None``:
a loop of one trip when rolled). It also records each program's compile time and checks that the
two give the same numbers. CPU figures are relative: the ratios are the point.
"""

from __future__ import annotations

import time

import chex
import jax
import jax.numpy as jnp

from benchmarks.timing import interleaved, report
from benchmarks.video_disc import demo_clips, timing_args
from latentjax.factory import build_autoencoder


def main() -> None:
    args = timing_args(__doc__, 10, "benchmarks/video/scan_cost.json")
    config, (clips,) = demo_clips(1)
    models = {}
    for unroll in (False, True):
        config.model.unroll_chunks = unroll
        models["unrolled" if unroll else "loop"] = build_autoencoder(config.model)
    rngs = {"params": jax.random.key(1), "sample": jax.random.key(2)}
    params = models["loop"].init(rngs, clips)  # the same parameters for both
    fns, compile_s, results = {}, {}, {}
    for kind, ae in models.items():
        for chunk in (1, None):

            def recon(p, x, ae=ae, chunk=chunk):
                return ae.apply(p, x, sample=False, chunk_latent_frames=chunk)[0]

            def grad(p, x, recon=recon):
                return jax.grad(lambda p: jnp.mean(jnp.abs(recon(p, x) - x)))(p)

            for what, fn in (("forward", recon), ("gradient", grad)):
                name = f"{kind}, chunks of {chunk or 'all'}, {what}"
                t = time.perf_counter()
                compiled = jax.jit(fn).lower(params, clips).compile()
                compile_s[name] = time.perf_counter() - t
                results[name] = compiled(params, clips)
                fns[name] = lambda c=compiled: c(params, clips)
    for name in results:  # unrolled and loop give the same numbers
        twin = name.replace("unrolled", "loop")
        chex.assert_trees_all_close(results[name], results[twin], atol=1e-5, rtol=0)
    seconds = interleaved(fns, args.repeats)
    rows = {}
    for name, sec in seconds.items():
        loop = seconds[name.replace("unrolled", "loop")]
        rows[name] = {"seconds": sec, "compile_s": compile_s[name], "loop_over_this": loop / sec}
    report(
        args.out,
        clips.shape,
        rows,
        ("program", "s", "loop's s / this", "compile (s)"),
        lambda name, r: (
            name,
            f"{r['seconds']:.4f}",
            f"{r['loop_over_this']:.1f}",
            f"{r['compile_s']:.1f}",
        ),
    )


if __name__ == "__main__":
    main()
