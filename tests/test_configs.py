"""Every config in configs/ parses and builds: its stage's state is built abstractly
(``jax.eval_shape``), so even pod-size configs are checked on a CPU without allocating them."""

import functools
from pathlib import Path

import flax.linen as nn
import jax
import pytest

from latentjax.config import load_config
from latentjax.data import pipeline
from latentjax.parallel import mesh as mesh_lib
from latentjax.parallel.plan import latents_stand_in
from latentjax.train.autoencoder import AutoencoderStage
from latentjax.train.dit import DiTStage

CONFIGS = Path(__file__).parents[1] / "configs"
ALL = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.glob("*/*.py") if p.stem != "__init__")


def _num_params(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


def _ae_for(config):
    """The stage-1 config whose latents a stage-2 config is trained on: same data and size."""
    candidates = [load_config(f"ae/{p.name}") for p in sorted((CONFIGS / "ae").glob("[!_]*.py"))]
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
    ae = _ae_for(config)
    f = 2 ** (len(ae.model.ch_mult) - 1)
    s = config.data.image_size // f
    stand_in = latents_stand_in(config.data.image_size, (s, s, ae.model.embed_dim))
    return jax.eval_shape(DiTStage(config, stand_in).init_state, jax.random.key(0))


@pytest.mark.parametrize("name", ALL)
def test_config_parses_and_builds(name):
    config = load_config(name)
    mesh_lib.check_rules(config.mesh.rules)
    state = _abstract_state(name)
    assert _num_params(state["params"]) > 0
    # The mesh resolves on a pod-size device count (one axis is -1).
    sizes = mesh_lib.mesh_shape(config.mesh.shape, 256)
    assert config.train.batch_size % (sizes[0] * sizes[1]) == 0 or sizes[0] * sizes[1] > 1


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
