"""Does the Grain input pipeline keep up with training on the digits? Target: >= 5x.

    python benchmarks/pipeline.py [--batches 200] [--steps 20] [--out FILE.json]

Measures (1) the examples per second the pipeline of ``ae/digits.py`` delivers (decode
PNG, resize 8 -> 16 px, normalise, shuffle, batch 64), decoding every record each epoch or from
the in-memory cache (``data.cache``), in the main process and with worker processes, with and
without random crop + flip; (2) the examples per second the digits train
steps consume (stage 1's reconstruction and adversarial steps, stage 2's DiT step on the
frozen encoder), the median of ``--steps`` warm steps. Prints a table with the ratio
pipeline / step for each pair and writes JSON. The target is checked on the digits configs'
own setting (cached, 0 workers, no augmentation); the table shows every variant.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import absl.flags
import jax
import numpy as np


def pipeline_rate(
    config, data_dir: str, batches: int, workers: int, augment: bool, cache: bool
) -> float:
    from latentjax.data import pipeline

    source = pipeline.load_source(config.data.name, config.data.train_split, data_dir)
    ds = pipeline.make_dataset(
        source,
        global_batch_size=config.train.batch_size,
        image_size=config.data.image_size,
        crop="random" if augment else "none",
        flip=augment,
        seed=0,
        process_index=0,
        process_count=1,
        cache=cache,
    )
    it = pipeline.make_iterator(ds, worker_count=workers)
    try:
        for _ in range(5):  # workers started, buffers filled
            next(it)
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        elapsed = time.perf_counter() - start
    finally:
        if hasattr(it, "close"):
            it.close()
    return batches * config.train.batch_size / elapsed


def step_rates(ae_config, dit_config, steps: int) -> dict[str, float]:
    """Examples per second of each digits train step (warm, median over ``steps``)."""
    from latentjax.factory import latent_shape
    from latentjax.parallel import mesh as mesh_lib
    from latentjax.train import autoencoder, dit
    from latentjax.train.state import build_state, jit_steps

    mesh = mesh_lib.make_mesh(ae_config.mesh.shape)
    rules = tuple(tuple(r) for r in ae_config.mesh.rules)
    b, s = ae_config.train.batch_size, ae_config.data.image_size
    rng = np.random.default_rng(0)
    batch = mesh_lib.global_batch(
        {
            "image": rng.uniform(-1, 1, (b, s, s, 1)).astype(np.float32),
            "label": rng.integers(0, 10, b).astype(np.int32),
        },
        mesh,
    )
    out = {}
    ae_task = autoencoder.make_task(ae_config, mesh)
    _, shardings, init = build_state(ae_task.init_state, mesh, rules, jax.random.key(0))
    ae_state = init(jax.random.key(0))
    ae_params = jax.tree.map(lambda x: x.copy(), ae_state["params"]["ae"])
    fns = jit_steps(ae_task, shardings, mesh)
    tasks = [("ae reconstruction step", ae_task, fns["reconstruction"], ae_state)]
    tasks.append(("ae adversarial step", ae_task, fns["adversarial"], None))

    ae = autoencoder.AutoencoderStage(ae_config).ae
    stage = dit.DiTStage(dit_config, ae, latent_shape(ae_config))
    dit_task = dit.make_task(stage, ae_params, {"shift": 0.0, "scale": 1.0}, mesh)
    _, dit_shardings, dit_init = build_state(dit_task.init_state, mesh, rules, jax.random.key(1))
    dit_fn = jit_steps(dit_task, dit_shardings, mesh)["diffusion"]
    tasks.append(("dit step", dit_task, dit_fn, dit_init(jax.random.key(1))))

    for name, task, fn, state in tasks:
        if state is None:
            state = init(jax.random.key(0))
        times = []
        for i in range(steps + 2):
            start = time.perf_counter()
            state, metrics = fn(state, task.frozen, batch, jax.random.key(i))
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
        out[name] = b / statistics.median(times[2:])
    return out


def main() -> None:
    absl.flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/pipeline.json")
    args = p.parse_args()

    from latentjax.config import load_config
    from latentjax.data import digits

    ae_config = load_config("ae/digits.py", [])
    dit_config = load_config("dit/digits.py", [])
    data_dir = digits.prepare_digits(
        os.environ.get("LATENTJAX_DATA_DIR") or os.path.join(tempfile.gettempdir(), "lj-tfds")
    )
    rates = {}
    default = None
    for cache in (False, True):
        for workers in (0, args.workers):
            for augment in (False, True):
                name = f"grain, {'cached' if cache else 'decode each epoch'}, {workers} workers"
                name += ", random crop + flip" if augment else ""
                rates[name] = pipeline_rate(
                    ae_config, data_dir, args.batches, workers, augment, cache
                )
                shipped = (cache, workers, augment) == (
                    ae_config.data.cache,
                    ae_config.data.worker_count,
                    ae_config.data.flip,
                )
                if shipped:
                    default = name
    assert default is not None, "the digits config's pipeline setting is not among the variants"
    steps = step_rates(ae_config, dit_config, args.steps)

    print(f"\n{len(jax.devices())} {jax.devices()[0].platform} device(s), batch 64, 16 px digits")
    print("\n| pipeline | examples/s |\n|---|---|")
    for k, v in rates.items():
        print(f"| {k} | {v:,.0f} |")
    print(
        "\n| train step | examples/s | digits default pipeline / step "
        "| slowest pipeline / step | fastest pipeline / step |"
    )
    print("|---|---|---|---|---|")
    ratios = {}
    for k, v in steps.items():
        lo, hi = min(rates.values()) / v, max(rates.values()) / v
        ratios[k] = {"default": rates[default] / v, "slowest_pipeline": lo, "fastest_pipeline": hi}
        print(f"| {k} | {v:,.0f} | {rates[default] / v:.1f}x | {lo:.1f}x | {hi:.1f}x |")
    worst = min(r["slowest_pipeline"] for r in ratios.values())
    default_ratio = min(r["default"] for r in ratios.values())
    print(f"\ndigits default pipeline: {default}")
    verdict = "met" if default_ratio >= 5 else "NOT met"
    print(f"its worst ratio {default_ratio:.1f}x (target >= 5x): {verdict}")
    print(f"worst ratio of any variant {worst:.1f}x")
    result = {
        "pipeline_examples_per_s": rates,
        "step_examples_per_s": steps,
        "ratios": ratios,
        "default_pipeline": default,
        "default_ratio": default_ratio,
        "worst_ratio": worst,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].platform}",
        "date": time.strftime("%Y-%m-%d"),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
