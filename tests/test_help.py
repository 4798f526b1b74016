"""``latentjax --help`` says what latentjax is, and every subcommand's help shows an example."""

from __future__ import annotations

import pytest

from latentjax.commands import COMMANDS, parser


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        parser().parse_args(argv)
    assert e.value.code == 0
    return capsys.readouterr().out


def test_the_top_level_help_says_what_latentjax_is(capsys):
    text = _help(["--help"], capsys)
    assert "Two-stage latent generative models" in text and "latentjax demo" in text
    assert "COMMAND_MODULES" not in text


@pytest.mark.parametrize("name", [n.replace("_", "-") for n in COMMANDS])
def test_every_subcommand_shows_an_example(name, capsys):
    text = _help([name, "--help"], capsys)
    example = text.split("example:", 1)
    assert len(example) == 2, text
    assert f"latentjax {name}" in example[1].splitlines()[1]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("latentjax: error: "), err
    return err[0]


def test_errors_name_the_command_that_fixes_them(tmp_path, capsys):
    from latentjax.commands import main
    from latentjax.config import load_config, to_json

    ae = tmp_path / "ae"
    ae.mkdir()
    (ae / "config.json").write_text(to_json(load_config("ae/digits.py")))
    sample = ["sample", "--num", "1", "--out", str(tmp_path / "x.npz"), "--workdir"]
    # A stage-1 run where a stage-2 run is needed: how to train one on it.
    assert main([*sample, str(ae)]) == 2
    line = _error_line(capsys)
    assert "holds a 'ae' run; this needs a stage-2 (dit) run" in line
    assert f"latentjax train --config dit/digits.py --workdir DIR --config.ae_workdir={ae}" in line
    # No run at all: which commands write one.
    assert main([*sample, str(tmp_path / "nothing")]) == 2
    line = _error_line(capsys)
    assert "no run at" in line and "latentjax train --config CONFIG --workdir DIR" in line
    assert "latentjax convert" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ae"]  # nothing was written
