"""What generation does with the sampler's latent: the images a ``Generator`` returns are
decode(z / scale + shift) of the latent the configured sampler produced, by hand.

The Generator holds the tiny two-stage model of ``tests/scripts/sample_on_mesh.py`` with random
weights (latent shift 0.1, scale 2). A spy around ``latentjax.generate.sample_latents`` records
the sampler's arguments and output inside the compiled program; the rest is redone here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
from test_wiring_autoencoder import random_like

from latentjax import generate
from latentjax.config import load_config
from latentjax.factory import latent_shape
from latentjax.generate import Generator, SampleSpec
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import autoencoder, dit

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from sample_on_mesh import AE_OVERRIDES, DIT_OVERRIDES  # noqa: E402

SHIFT, SCALE = 0.1, 2.0


def tiny_generator(mesh) -> Generator:
    """The two stages of ``sample_on_mesh.tiny_generator`` with random weights (no compiled
    initialisation: the shapes come from ``jax.eval_shape``)."""
    ae_config = load_config("ae/digits.py", AE_OVERRIDES)
    ae_stage = autoencoder.AutoencoderStage(ae_config)
    config = load_config("dit/digits.py", DIT_OVERRIDES)
    stage = dit.DiTStage(config, ae_stage.ae, latent_shape(ae_config))
    shapes = lambda init: nn.unbox(jax.eval_shape(init, jax.random.key(0)))["params"]  # noqa: E731
    repl = mesh_lib.replicated(mesh)
    ae_params = jax.device_put(random_like(shapes(ae_stage.init_state)["ae"], 1), repl)
    params = jax.device_put(random_like(shapes(stage.init_state), 2), repl)
    frozen, _ = dit.frozen_inputs(ae_params, {"shift": SHIFT, "scale": SCALE}, mesh)
    return Generator(stage, params, frozen, mesh, (8, 8, 1))


def test_images_are_the_decoded_latent_of_the_configured_sampler(monkeypatch):
    seen, static = {}, {}
    sampler = generate.sample_latents
    traced = ("num_steps", "cfg_scale", "eta", "guidance_interval", "time_shift")

    def spy(apply_fn, params, noise, labels, **kwargs):
        z = sampler(apply_fn, params, noise, labels, **kwargs)
        static.update({k: v for k, v in kwargs.items() if k not in traced and k != "keys"})
        static["apply_fn"] = apply_fn

        def record(*values):
            names = ("noise", "labels", "z", *traced)
            seen.update(zip(names, map(np.asarray, values), strict=True))

        jax.debug.callback(record, noise, labels, z, *[kwargs[k] for k in traced])
        return z

    monkeypatch.setattr(generate, "sample_latents", spy)
    gen = tiny_generator(mesh_lib.make_mesh({"data": -1}))
    np.testing.assert_allclose(
        [gen.frozen["latent_shift"], gen.frozen["latent_scale"]], [SHIFT, SCALE]
    )
    labels = np.array([3, 0, 7], np.int32)
    spec = SampleSpec(
        "euler", num_steps=3, cfg_scale=2.5, guidance_interval=(0.2, 0.9), time_shift=2.5
    )
    images = gen.sample_chunk(labels, 0, 5, spec, chunk=4)  # padded to 4, 3 returned
    assert images.shape == (3, 8, 8, 1) and images.dtype == np.uint8

    # The sampler ran on the stage's network and EMA weights with the config's path and
    # prediction and the spec's settings, guided toward the null class num_classes.
    d = gen.stage.config.diffusion
    assert static["apply_fn"] == gen.stage.apply
    assert (static["path"], static["prediction"]) == (d.path, d.prediction)
    assert (static["sampler"], static["guided"]) == ("euler", True)
    assert static["null_label"] == gen.stage.config.model.num_classes == 10
    assert (int(seen["num_steps"]), float(seen["cfg_scale"])) == (3, 2.5)
    np.testing.assert_allclose(np.ravel(seen["guidance_interval"]), [0.2, 0.9])
    assert float(seen["time_shift"]) == 2.5
    np.testing.assert_array_equal(seen["labels"][:3], labels)
    assert seen["noise"].shape == (4, *gen.stage.latent_shape)
    assert float(np.std(seen["noise"])) > 0.5  # standard normal noise, not zeros

    # The images: the decoder on the un-normalised latent z / scale + shift, [-1, 1] -> uint8.
    ae = gen.stage.ae
    decode = jax.jit(lambda p, z: ae.apply(p, z, method=ae.decode))
    x = np.asarray(decode(gen.frozen["ae"], seen["z"][:3] / SCALE + SHIFT), np.float64)
    want = np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5)
    # Rounding to uint8 may flip a value at .5 between the two programs.
    assert np.abs(images.astype(np.float64) - want).max() <= 1.0
    assert np.mean(images == want) > 0.95
    # Images with detail in them, not clipped flat, so a wrong latent would show.
    assert 0.5 < np.mean((want > 0) & (want < 255)) and np.std(want) > 10
