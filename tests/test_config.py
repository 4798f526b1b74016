"""Config files parse, overrides are typed, and mistakes fail with one readable message."""

from pathlib import Path

import pytest

from latentjax.config import builtin_names, from_json, load_config, to_json
from latentjax.errors import ConfigError
from latentjax.factory import latent_shape

ALL_CONFIGS = builtin_names()


def test_there_are_configs():
    assert "ae/digits.py" in ALL_CONFIGS and "dit/digits.py" in ALL_CONFIGS


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_config_parses_and_round_trips(name):
    config = load_config(name)
    assert config.stage in ("ae", "dit")
    assert from_json(to_json(config)) == config


def test_overrides_are_typed():
    c = load_config("ae/digits.py", ["train.num_steps=7", "optim.lr=1", "model.ch_mult=(1, 2)"])
    assert c.train.num_steps == 7 and isinstance(c.train.num_steps, int)
    assert c.optim.lr == 1.0 and isinstance(c.optim.lr, float)
    assert c.model.ch_mult == (1, 2)
    c = load_config("ae/digits.py", ["loss.reconstruction=l2", "model.attn_resolutions=8"])
    assert c.loss.reconstruction == "l2" and c.model.attn_resolutions == (8,)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.chh=3", "unknown config key 'model.chh'.*did you mean 'model.ch'"),
        ("nope.x=1", "unknown config key 'nope.x'"),
        ("train.num_steps=ten", "expects int"),
        ("train=3", "is a group"),
        ("train.num_steps", "not of the form key=value"),
    ],
)
def test_bad_overrides_raise_config_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("ae/digits.py", [override])


def test_missing_and_broken_config_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.py")
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    with pytest.raises(ConfigError, match="could not import"):
        load_config(broken)
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(ConfigError, match="no get_config"):
        load_config(empty)


@pytest.mark.parametrize(
    "override",
    [
        "diffusion.path=ddpm_lnear",
        "diffusion.prediction=epsilon",
        "diffusion.t_sampling=lognormal",
        "diffusion.loss_weighting=min-snr",
        "sample.sampler=dpm++",
        "optim.schedule=linear",
    ],
)
def test_stage2_choices_are_checked_before_tracing(override):
    """A misspelt stage-2 choice is a one-line error naming the key when the stage is built."""
    from latentjax.train.autoencoder import AutoencoderStage
    from latentjax.train.dit import DiTStage

    ae_config = load_config("ae/digits.py")
    ae = AutoencoderStage(ae_config).ae
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}=.*; use one of") as e:
        DiTStage(load_config("dit/digits.py", [override]), ae, latent_shape(ae_config))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("shift", ["0.0", "-2.0"])
def test_a_time_shift_must_be_positive(shift):
    from latentjax.train.autoencoder import AutoencoderStage
    from latentjax.train.dit import DiTStage

    ae_config = load_config("ae/digits.py")
    ae = AutoencoderStage(ae_config).ae
    config = load_config("dit/digits.py", [f"diffusion.time_shift={shift}"])
    with pytest.raises(ConfigError, match=r"^diffusion.time_shift=.* must be a number > 0"):
        DiTStage(config, ae, latent_shape(ae_config))


@pytest.mark.parametrize("name", ["ae/base.py", "dit/base.py"])
def _leaves(node, prefix=""):
    out = []
    for key in node.keys():
        if hasattr(node[key], "keys"):
            out += _leaves(node[key], f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


@pytest.mark.parametrize("name", ["ae/base.py", "dit/base.py"])
def test_every_key_of_a_base_config_says_what_it_means(name):
    from latentjax.config import config_files, describe

    files, own = config_files(name)
    lines = describe(load_config(name), files, own)
    assert [ln.split(" =")[0] for ln in lines if "  # " not in ln] == []


def test_config_show_lists_keys_values_and_comments(capsys):
    from latentjax.commands import main

    assert main(["config", "show", "ae/digits.py", "--config.train.num_steps=7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_key = {ln.split(" =")[0]: ln for ln in lines if " = " in ln}
    assert sorted(by_key) == sorted(_leaves(load_config("ae/digits.py")))
    assert by_key["train.num_steps"].startswith("train.num_steps = 7 ")
    assert "# optimiser steps of the whole run" in by_key["train.num_steps"]
    # The meaning from the base config, and why the digits config sets it so.
    assert "decode the split once" in by_key["data.cache"]
    assert "(here: the split is 0.1 MB decoded)" in by_key["data.cache"]
