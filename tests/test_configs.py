"""Every built-in config parses and builds: its stage's state is built abstractly
(``jax.eval_shape``), so even pod-size configs are checked on a CPU without allocating them."""

import functools

import flax.linen as nn
import jax
import pytest

from latentjax.config import builtin_names, load_config
from latentjax.data import pipeline
from latentjax.errors import ConfigError
from latentjax.factory import latent_shape
from latentjax.parallel import mesh as mesh_lib
from latentjax.plan import LatentsAsImages
from latentjax.train.autoencoder import AutoencoderStage
from latentjax.train.dit import DiTStage

ALL = builtin_names()


def _num_params(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


def _ae_for(config):
    """The stage-1 config whose latents a stage-2 config is trained on: same data and size."""
    candidates = [load_config(n) for n in ALL if n.startswith("ae/")]
    same = [a for a in candidates if a.data.image_size == config.data.image_size]
    same.sort(key=lambda a: a.data.name != config.data.name)
    assert same, f"no stage-1 config for {config.data.image_size}px"
    return same[0]


@functools.cache
def _abstract_state(name: str):
    """The unboxed abstract state of a config (cached: the big ones take seconds to trace)."""
    return nn.unbox(_trace_state(load_config(name)))


def _trace_state(config):
    if config.stage == "ae":
        return jax.eval_shape(AutoencoderStage(config).init_state, jax.random.key(0))
    stage = DiTStage(config, LatentsAsImages(), latent_shape(_ae_for(config)))
    return jax.eval_shape(stage.init_state, jax.random.key(0))


def _devices_for(name: str, config) -> tuple[int, ...]:
    """The device counts a config is written for: a v5p-64 slice (32 chips) for a config that
    shards over fsdp or tensor; one device and the 8 fake CPU devices of the tests for the CPU
    configs; one device for a stage's base config (the defaults launch configs start from, each
    of which is checked on its own slice)."""
    fixed = [s for axis, s in config.mesh.shape.items() if axis != "data"]
    if max(fixed) > 1:
        return (32,)
    return (1,) if name.endswith("/base.py") else (1, 8)


@pytest.mark.parametrize("name", ALL)
def test_config_parses_and_builds(name):
    config = load_config(name)
    mesh_lib.check_rules(config.mesh.rules)
    state = _abstract_state(name)
    assert _num_params(state["params"]) > 0
    # The mesh resolves on the devices the config is written for, and the global batch splits
    # evenly over its data-parallel devices there.
    for devices in _devices_for(name, config):
        sizes = mesh_lib.mesh_shape(config.mesh.shape, devices)
        named = dict(zip(("data", "fsdp", "tensor"), sizes, strict=True))
        mesh_lib.check_batch_size(config.train.batch_size, named, "train.batch_size")


def test_a_batch_that_does_not_split_over_the_devices_is_refused():
    sizes = {"data": 2, "fsdp": 4, "tensor": 1}
    mesh_lib.check_batch_size(64, sizes, "train.batch_size")
    with pytest.raises(ConfigError, match="train.batch_size=7 is not a positive multiple of the 8"):
        mesh_lib.check_batch_size(7, sizes, "train.batch_size")
    with pytest.raises(ConfigError, match="multiple of the 2"):
        mesh_lib.check_batch_size(7, {"data": 2, "fsdp": 1, "tensor": 2}, "train.batch_size")


def test_real_scale_configs_have_the_reference_sizes():
    ae = load_config("ae/kl_f8c4_imagenet256.py")
    # latent-diffusion kl-f8: kl 1e-6, disc_start 50001, disc_weight 0.5, lr 4.5e-6 x batch.
    assert (ae.loss.kl_weight, ae.loss.disc_start, ae.loss.disc_weight) == (1e-6, 50001, 0.5)
    assert ae.optim.lr == 4.5e-6 * ae.train.batch_size and ae.loss.perceptual_weight == 1.0
    state = _abstract_state("ae/kl_f8c4_imagenet256.py")
    # Stable Diffusion's AutoencoderKL (diffusers' / CompVis' kl-f8) has 83,653,863 parameters.
    assert _num_params(state["params"]["ae"]) == 83_653_863
    dit = load_config("dit/dit_xl2_imagenet256.py")
    state = _abstract_state("dit/dit_xl2_imagenet256.py")
    # DiT-XL/2 (Peebles & Xie 2023, "675M"): the reference code counts 675,129,632 including its
    # frozen 2-D sin-cos position table (256 x 1152 = 294,912), which is a constant here.
    assert _num_params(state["params"]) == 675_129_632 - 256 * 1152
    assert (dit.train.batch_size, dit.optim.lr, dit.optim.weight_decay) == (256, 1e-4, 0.0)
    assert dit.optim.ema_decay == 0.9999 and dit.train.num_steps == 400_000
    # The latent grid is 32 x 32 x 4, patch 2: 256 tokens.
    assert state["params"]["params"]["x_embedder"]["kernel"].shape == (2, 2, 4, 1152)


@pytest.mark.parametrize("name", ["ae/kl_f8c4_imagenet256.py", "dit/dit_xl2_imagenet256.py"])
def test_imagenet_missing_fails_clearly(name, tmp_path):
    """ImageNet cannot be downloaded here: loading its source says what to prepare, in one line
    (and importing the config does not touch the data)."""
    config = load_config(name, [f"data.data_dir={tmp_path}"])
    with pytest.raises(pipeline.DataError, match="imagenet2012.*not prepared") as e:
        pipeline.load_source(config.data.name, config.data.train_split, config.data.data_dir)
    assert "\n" not in str(e.value)
