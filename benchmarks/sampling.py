"""Sampling cost: one jitted N-step sampler program vs N separately jitted model calls, and
samples/s for DiT variants at 32x32x4 latents (ImageNet-256 with an f8c4 autoencoder).

    .venv/bin/python -m benchmarks.sampling [--variants S/2 B/2] [--steps 50] [--batch 4]
        [--out benchmarks/sampling.json]

The ratio (sampler time / N bare calls) should be <= 1.1: the loop adds only the update
arithmetic. Timings are the median of --repeats warm runs, the two taken in turns
(``benchmarks.timing.interleaved``: the machine's speed drifts between runs).
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp

from benchmarks.timing import interleaved
from latentjax.diffusion.samplers import make_runtime_sampler
from latentjax.models.dit import DiT, dit_kwargs


def bench(variant: str, steps: int, batch: int, repeats: int, sampler: str) -> dict:
    model = DiT(input_size=32, in_channels=4, num_classes=1000, learn_sigma=False,
                **dit_kwargs(variant))  # fmt: skip
    x = jax.random.normal(jax.random.key(0), (batch, 32, 32, 4))
    y = jnp.zeros((batch,), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(1), x, jnp.zeros((batch,)), y)
    call = jax.jit(model.apply)

    def bare():
        out = x
        for i in range(steps):
            out = call(params, x, jnp.full((batch,), 1000.0 * (1 - i / steps)), y)
        return out

    run = make_runtime_sampler(model.apply, path="linear", prediction="velocity", sampler=sampler)
    interval = jnp.array([0.0, 1.0])
    loop = lambda: run(params, x, y, None, steps, 0.0, 1.0, interval)  # noqa: E731
    t = interleaved({"bare": bare, "loop": loop}, repeats)
    t_bare, t_loop = t["bare"], t["loop"]
    return {
        "variant": variant,
        "sampler": sampler,
        "steps": steps,
        "batch": batch,
        "bare_calls_s": t_bare,
        "sampler_s": t_loop,
        "ratio": t_loop / t_bare,
        "samples_per_s": batch / t_loop,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["S/2", "B/2"])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--out", default="benchmarks/results/sampling.json")
    args = ap.parse_args()
    rows = [bench(v, args.steps, args.batch, args.repeats, args.sampler) for v in args.variants]
    print(f"{'variant':8s} {'steps':>5s} {'batch':>5s} {'N calls s':>10s} {'sampler s':>10s} "
          f"{'ratio':>6s} {'samples/s':>10s}")  # fmt: skip
    for r in rows:
        print(f"{r['variant']:8s} {r['steps']:5d} {r['batch']:5d} {r['bare_calls_s']:10.2f} "
              f"{r['sampler_s']:10.2f} {r['ratio']:6.2f} {r['samples_per_s']:10.3f}")  # fmt: skip
    with open(args.out, "w") as f:
        json.dump({"devices": str(jax.devices()), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
