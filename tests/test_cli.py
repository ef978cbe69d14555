"""The ``distill`` command itself: its help, and the callbacks it installs in place of Lightning's defaults."""

from __future__ import annotations

import pytest

from distill.cli import main


def _help(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help_lists_sample_beside_the_lightning_subcommands(capsys, flag):
    out = _help(capsys, [flag])
    for subcommand in ("fit", "validate", "test", "flops", "export", "precompute"):
        assert f"    {subcommand} " in out, subcommand
    assert "`distill sample` draws a PNG grid" in " ".join(out.split())


def test_subcommand_help_keeps_its_own_description(capsys):
    out = _help(capsys, ["fit", "--help"])
    assert "Runs the full optimization routine." in out
    assert "distill sample" not in out and "--trainer.max_steps" in out
