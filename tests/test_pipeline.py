"""The Python surface: ``latentjax.load_pipeline`` samples the images ``latentjax sample`` writes
(same seed, same images) and does not recompile on a second call; ``latentjax.config.load``
builds the config the command line builds; the public names resolve; bad input is one
LatentjaxError. The two-stage model is a conversion (tiny random diffusers autoencoder + DiT
``.pt``, as tests/test_convert_workdir.py), so nothing is trained here; the notebook's test
trains through ``latentjax.train``."""

import json

import jax
import numpy as np
import pytest
from test_convert_workdir import HEADS_CLASSES, converted_ae, dit_pt  # noqa: F401 (fixtures)

import latentjax
from latentjax.commands import main
from latentjax.config import load_config
from latentjax.errors import ConfigError, LatentjaxError

TRACE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/backend_compile_duration",
)


def _compilations(fn):
    """(fn(), the JAX traces and backend compilations it caused), from jax.monitoring."""
    seen = []

    def listener(event, duration, **kwargs):
        if event in TRACE_EVENTS:
            seen.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        return fn(), seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(scope="module")
def dit_dir(converted_ae, dit_pt, tmp_path_factory):  # noqa: F811 (fixtures)
    _, ae_dir = converted_ae
    out = tmp_path_factory.mktemp("pipeline") / "dit"
    argv = ["convert", "dit", str(dit_pt), "--out", str(out), *HEADS_CLASSES]
    assert main([*argv, "--ae", str(ae_dir)]) == 0
    return out


def test_pipeline_samples_the_images_latentjax_sample_writes(dit_dir, tmp_path):
    pipe = latentjax.load_pipeline(dit_dir)
    # The converted DiT guides 3 of its 4 latent channels with scale 4 (its config's sample
    # section): a guided program, as the command runs it.
    assert (pipe.config.sample.guidance_channels, pipe.config.sample.cfg_scale) == (3, 4.0)
    npz = tmp_path / "cli.npz"
    argv = ["sample", "--workdir", str(dit_dir), "--num", "5", "--labels", "2,0", "--steps", "2"]
    assert main([*argv, "--seed", "7", "--out", str(npz), "--no-progress"]) == 0
    with np.load(npz) as f:
        want, want_labels = f["images"], f["labels"]
    assert list(want_labels) == [2, 0, 2, 0, 2]

    images, first = _compilations(lambda: pipe.sample(labels=[2, 0], num=5, steps=2, seed=7))
    assert images.dtype == np.uint8 and images.shape == (5, 8, 8, 1)
    np.testing.assert_array_equal(images, want)
    assert first, "the first call compiled nothing: the listener is not counting"

    # Same shape, other runtime values (labels, seed, steps, scale): no trace, no compilation.
    again, second = _compilations(
        lambda: pipe.sample(labels=1, num=5, steps=3, cfg=2.0, seed=8, progress=False)
    )
    assert second == []
    assert again.shape == images.shape and not np.array_equal(again, images)

    # Floats are the same samples before rounding: round((x + 1) * 127.5) gives the uint8 ones.
    floats = pipe.sample(labels=[2, 0], num=5, steps=2, seed=7, output="float")
    assert floats.dtype == np.float32 and floats.min() >= -1.0 and floats.max() <= 1.0
    np.testing.assert_array_equal(np.round((floats + 1.0) * 127.5).astype(np.uint8), want)

    # The parts are the ones the pipeline samples with.
    stats = json.loads((dit_dir / "latent_stats.json").read_text())
    assert pipe.latent_stats == stats
    assert (pipe.autoencoder.latent_shift, pipe.autoencoder.latent_scale) == (0.0, 0.18215)
    assert pipe.autoencoder.decode(np.zeros((1, *pipe.latent_shape))).shape == (1, 8, 8, 1)
    direct = latentjax.load_dit(dit_dir).params
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(pipe.dit.params), direct)


def test_bad_pipeline_input_is_one_line(dit_dir, converted_ae):  # noqa: F811 (fixture)
    _, ae_dir = converted_ae
    with pytest.raises(LatentjaxError, match=r"stage-1 \('ae'\) run; .*load_autoencoder"):
        latentjax.load_pipeline(ae_dir)
    pipe = latentjax.load_pipeline(dit_dir)
    bad = [
        ({"labels": 1}, r"say how many images: num=N"),
        ({"labels": [0, 3], "num": 2}, r"label 3 out of range \[0, 3\)"),
        ({"labels": [0.5]}, "class indices"),
        ({"num": 0}, "positive integer"),
        ({"num": 2, "output": "png"}, "output='png'; use one of uint8, float"),
        ({"num": 2, "seed": 1.5}, "seed must be an integer"),
        ({"num": 2, "sampler": "rk4"}, "rk4"),
        ({"num": 2, "batch_size": 0}, "batch_size must be a positive integer"),
        ({"num": 2, "guidance_interval": (0.8, 0.2)}, "guidance interval"),
    ]
    for kwargs, message in bad:
        with pytest.raises(LatentjaxError, match=message):
            pipe.sample(**kwargs)


def test_config_load_builds_the_command_lines_config():
    cli = load_config("ae/digits.py", ["train.num_steps=7", "model.ch_mult=(1, 2)", "seed=3"])
    flat = {"train.num_steps": 7, "model.ch_mult": [1, 2], "seed": 3}
    nested = {"train": {"num_steps": 7}, "model": {"ch_mult": (1, 2)}, "seed": 3}
    for overrides in (flat, nested, ["train.num_steps=7", "model.ch_mult=(1, 2)", "seed=3"]):
        assert latentjax.config.load("ae/digits.py", overrides=overrides).to_dict() == (
            cli.to_dict()
        )
    assert latentjax.config.load("ae/digits.py").to_dict() == load_config("ae/digits.py").to_dict()
    with pytest.raises(ConfigError, match="did you mean 'train.num_steps'"):
        latentjax.config.load("ae/digits.py", overrides={"train.num_step": 7})
    with pytest.raises(ConfigError, match="'train.num_steps' expects int"):
        latentjax.config.load("ae/digits.py", overrides={"train.num_steps": "many"})
    with pytest.raises(ConfigError, match="a dict or a list of 'key=value'"):
        latentjax.config.load("ae/digits.py", overrides="train.num_steps=7")


def test_train_refuses_what_no_run_can_use_and_leaves_no_directory(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"latentjax.config.load\(NAME"):
        latentjax.train("ae/digits.py", workdir)
    config = latentjax.config.load("ae/digits.py", overrides={"train.num_steps": 0})
    with pytest.raises(ConfigError, match="train.num_steps=0 must be a positive integer"):
        latentjax.train(config, workdir)
    assert not workdir.exists()


def test_the_public_api_is_listed_and_resolves():
    assert sorted(latentjax.__all__) == sorted([*latentjax._API, *latentjax._MODULES])
    for name in latentjax.__all__:
        assert getattr(latentjax, name) is not None, name
    assert callable(latentjax.train) and callable(latentjax.config.load)
    # The package is still the package: its modules import as before.
    from latentjax.train import trainer

    assert latentjax.train.trainer is trainer
