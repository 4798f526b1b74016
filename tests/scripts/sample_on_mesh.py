"""Samples with a tiny untrained (perturbed) two-stage model on a given mesh; prints the images
(or, with ``video``, the clips of a video DiT over a causal video autoencoder).

Used by tests/test_generate.py in a subprocess (the number of fake CPU devices is fixed when JAX
starts) and imported by it for :func:`tiny_generator`.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python tests/scripts/sample_on_mesh.py '{"data": 4, "fsdp": 2, "tensor": 1}' 8 [video]
"""

import json
import sys

import jax
import numpy as np

from latentjax.config import load_config
from latentjax.factory import stage2_latent_shape
from latentjax.generate import Generator, SampleSpec
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import autoencoder, dit

AE_OVERRIDES = [
    "model.ch=8",
    "model.num_groups=4",
    "model.ch_mult=(1, 2)",
    "data.image_size=8",
]
DIT_OVERRIDES = [
    "model.hidden_size=16",
    "model.depth=1",
    "model.num_heads=2",
    "data.image_size=8",
    "sample.batch_size=8",
]


VIDEO_AE_OVERRIDES = [
    "model.ch=8",
    "model.ch_mult=(1, 2)",
    "model.temporal_downsample=(True,)",
    "model.num_res_blocks=1",
    "data.image_size=8",
]
VIDEO_DIT_OVERRIDES = [
    *DIT_OVERRIDES,
    "model.attention=factorised",
    "model.depth=2",
    "data.frames=5",
]


def tiny_generator(mesh, video: bool = False) -> Generator:
    """A Generator over random weights (perturbed away from DiT's zero output at init); with
    ``video``, of 5-frame clips."""
    ae_config = load_config(
        "ae/digits_video.py" if video else "ae/digits.py",
        VIDEO_AE_OVERRIDES if video else AE_OVERRIDES,
    )
    ae_stage = autoencoder.AutoencoderStage(ae_config)
    ae_params = jax.jit(ae_stage.init_state)(jax.random.key(0))["params"]["ae"]
    config = load_config("dit/digits.py", VIDEO_DIT_OVERRIDES if video else DIT_OVERRIDES)
    stage = dit.DiTStage(config, ae_stage.ae, stage2_latent_shape(config, ae_config))
    params = jax.jit(stage.init_state)(jax.random.key(1))["params"]
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    leaves = [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    params = jax.device_put(jax.tree.unflatten(tree, leaves), mesh_lib.replicated(mesh))
    stats = {"shift": 0.1, "scale": 2.0}
    frozen, _ = dit.frozen_inputs(jax.device_put(ae_params, mesh_lib.replicated(mesh)), stats, mesh)
    image_shape = (ae_config.data.image_size, ae_config.data.image_size, 1)
    if video:
        image_shape = (config.data.frames, *image_shape)
    return Generator(stage, params, frozen, mesh, image_shape)


def main(shape, chunk, video=False):
    mesh = mesh_lib.make_mesh(shape)
    gen = tiny_generator(mesh, video)
    labels = np.arange(12, dtype=np.int32) % 10
    out = {"devices": jax.device_count()}
    # Stochastic, guided on part of the path: every source of randomness and both batch halves.
    spec = SampleSpec("euler_maruyama", num_steps=3, cfg_scale=2.0, guidance_interval=(0.2, 1))
    images = np.concatenate(list(gen.sample(labels, 7, spec, chunk)))
    out["images"] = images.astype(int).ravel().tolist()
    print(json.dumps(out))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3:] == ["video"])
