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
