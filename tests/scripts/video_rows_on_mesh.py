"""Encodes and decodes a clip with a small causal video autoencoder on a given mesh, its
activations' rows split over ``tensor`` (the rules table's ``height`` rule) or not, and prints
the reconstruction's checksum values and the compiled program's per-device memory as JSON.

Used by tests/test_video_autoencoder.py in subprocesses (the number of fake CPU devices is fixed
when JAX starts).

    python tests/scripts/video_rows_on_mesh.py '{"data": 2, "fsdp": 1, "tensor": 4}' rows|none
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from latentjax.config import load_config
from latentjax.factory import build_autoencoder
from latentjax.parallel import mesh as mesh_lib

OVERRIDES = [
    "model.ch=8",
    "model.ch_mult=(1, 2, 2)",
    "model.temporal_downsample=(True, False)",
    "model.num_res_blocks=1",
    "data.image_size=32",
]


def main() -> None:
    shape, mode = json.loads(sys.argv[1]), sys.argv[2]
    config = load_config("ae/digits_video.py", OVERRIDES)
    rules = tuple(tuple(r) for r in config.mesh.rules)
    if mode == "none":  # the same mesh, rows replicated
        rules = tuple(r for r in rules if r[0] != "height")
    mesh = mesh_lib.make_mesh(shape)
    ae = build_autoencoder(config.model)
    clip = jnp.tanh(jax.random.normal(jax.random.key(1), (2, 5, 32, 32, 1)))
    params = ae.init({"params": jax.random.key(0)}, clip[:, :1])
    params = jax.tree.map(np.asarray, params)  # the same numbers whatever the devices

    def through(params, x):
        z = ae.apply(params, x, method=ae.encode).mean
        return ae.apply(params, z, method=ae.decode)

    batch = NamedSharding(mesh, P(("data", "fsdp")))
    replicated = NamedSharding(mesh, P())
    step = jax.jit(through, in_shardings=(replicated, batch), out_shardings=batch)
    with mesh_lib.activation_rules(mesh, rules):
        lowered = step.lower(params, clip)
        compiled = lowered.compile()
    constraints = [line for line in lowered.as_text().splitlines() if "sharding_constraint" in line]
    out = np.asarray(compiled(params, clip), np.float64)
    mem = compiled.memory_analysis()
    print(
        json.dumps(
            {
                "devices": jax.device_count(),
                "out": out.reshape(-1)[::97].tolist(),
                "sum": float(out.sum()),
                "temp_bytes": int(mem.temp_size_in_bytes),
                "constraints": len(constraints),
                "rows_over_tensor": sum('{}, {"tensor"}' in c for c in constraints),
            }
        )
    )


if __name__ == "__main__":
    main()
