"""How much one stage-2 run's Fréchet ratio moves between sampling seeds (issue 19).

    python benchmarks/guidance/draws.py runs/demo/dit benchmarks/guidance/draws.json [SEEDS]

Samples ``3,000`` images per seed (classes in turn; ``SEEDS`` comma-separated, default 0,1,2,3)
unguided with the run's sampler, and judges them with ``distribution.report`` as ``latentjax
eval`` does: all 3,000 at once, and each block of 1,000 (the demo's size) alone. Writes each
seed's figures and the mean and standard deviation of the ratio at both sizes: the spread a bar
on one draw of 1,000 samples has to allow for.
"""

import json
import sys

import numpy as np

from latentjax.eval import distribution as dist
from latentjax.eval import generation
from latentjax.generate import load_generator, spec_from_config
from latentjax.parallel.mesh import make_mesh
from latentjax.run import Run

NUM, BLOCK = 3000, 1000


def main(workdir: str, out: str, seeds: str = "0,1,2,3") -> None:
    run = Run.open(workdir, stage="dit")
    generator = load_generator(workdir, make_mesh(run.ae_run().config.mesh.shape))
    real = generation.real_sets(run.ae_run().config.data)
    spec = spec_from_config(run.config, cfg_scale=1.0)
    labels = np.arange(NUM) % 10

    def judged(images, asked):
        return dist.report(
            real["train_images"], real["train_labels"], real["test_images"],
            real["test_labels"], images, asked,
        )  # fmt: skip

    rows = []
    for seed in (int(s) for s in seeds.split(",")):
        images = np.concatenate(list(generator.sample(labels, seed, spec, 500)))
        whole = judged(images, labels)
        blocks = [
            judged(images[i : i + BLOCK], labels[i : i + BLOCK])["samples_frechet_ratio"]
            for i in range(0, NUM, BLOCK)
        ]
        rows.append(
            {
                "seed": seed,
                f"frechet_ratio_{NUM}": whole["samples_frechet_ratio"],
                f"frechet_ratio_{BLOCK}": blocks,
                "recognised": whole["samples_recognised"],
                "class_variance_ratio": whole["samples_class_variance_ratio"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    whole = [r[f"frechet_ratio_{NUM}"] for r in rows]
    blocks = [x for r in rows for x in r[f"frechet_ratio_{BLOCK}"]]
    summary = {
        "workdir": workdir,
        "reference": dist.REFERENCE,
        "rows": rows,
        str(NUM): {"mean": float(np.mean(whole)), "sd": float(np.std(whole, ddof=1))},
        str(BLOCK): {"mean": float(np.mean(blocks)), "sd": float(np.std(blocks, ddof=1))},
    }
    with open(out, "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: summary[k] for k in (str(NUM), str(BLOCK))}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
