"""Sampling-side levers on a trained stage-2 run, each judged as a distribution (issue 19).

    python benchmarks/guidance/levers.py runs/demo/dit benchmarks/guidance/levers.json

Samples the demo's 1,000 labels (100 per digit, in the demo's order) from the run's checkpoint
with the demo's sampler changed one lever at a time (sampler, step count, guidance scale, the raw
weights instead of the EMA) and writes, per setting, ``distribution.report``'s figures for the
samples, the real references and the autoencoder's reconstructions. No training: what these
levers cannot fix is the model's. The README's "Closing the gap" table is this file's output,
measured before 2026-12-03 (digits feature space v1; the test split as real-vs-real).
"""

import json
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from latentjax.eval import distribution as dist
from latentjax.eval import generation
from latentjax.generate import collect_samples, load_generator, spec_from_config
from latentjax.parallel.mesh import make_mesh
from latentjax.run import Run
from latentjax.train import state as state_lib

SETTINGS = [
    {"cfg_scale": 1.0},
    {"cfg_scale": 2.0},
    {"cfg_scale": 1.0, "sampler": "heun"},
    {"cfg_scale": 1.0, "sampler": "euler_maruyama"},
    {"cfg_scale": 1.0, "num_steps": 100},
    {"cfg_scale": 1.0, "raw": True},  # the trained weights, not their EMA
]


def main(workdir: str, out: str) -> None:
    run = Run.open(workdir, stage="dit")
    config = run.config
    generator = load_generator(workdir, make_mesh(config.mesh.shape))
    real = generation.real_sets(config.data)
    _, recon = generation.references(config.data, generator, config.sample.batch_size)
    labels = np.repeat(np.arange(10, dtype=np.int32), 100)  # the demo's
    rows = []
    for setting in SETTINGS:
        setting = dict(setting)
        raw = setting.pop("raw", False)
        if raw:
            state = state_lib.restore(run, generator.stage.init_state, generator.mesh)
            generator.ema_params = state["params"]
        start = time.time()
        images = collect_samples(generator, labels, spec_from_config(config, **setting), 100)
        seconds = time.time() - start
        with threadpool_limits(1, "blas"):
            figures = dist.report(
                real["train_images"], real["train_labels"], real["test_images"],
                real["test_labels"], images, labels, train_reconstructions=recon,
            )  # fmt: skip
        rows.append({**setting, "raw": raw, "t": round(seconds, 1), **figures})
        print(json.dumps({k: v for k, v in rows[-1].items() if not k.startswith("re")}))
        with open(out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
