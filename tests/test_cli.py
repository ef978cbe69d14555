"""The ``distill`` command itself: its help, and the callbacks it installs in place of Lightning's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.callbacks import ModelSummary, ProgressBar, TQDMProgressBar

from distill.callbacks import DistillModelSummary, StepRichProgressBar, StepTQDMProgressBar
from distill.cli import main
from distill.lightning_cli import DistillCLI

TEACHER_CFG = str(Path(__file__).resolve().parents[1] / "configs" / "digits" / "teacher.yaml")


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


@pytest.mark.parametrize(
    ("args", "summary", "bars"),
    [
        ([], DistillModelSummary, [[StepRichProgressBar], [StepTQDMProgressBar]]),  # the kind Lightning chose
        (
            [
                "--trainer.callbacks+=lightning.pytorch.callbacks.ModelSummary",
                "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar",
            ],
            ModelSummary,
            [[TQDMProgressBar]],
        ),
        (["--trainer.enable_model_summary=false", "--trainer.enable_progress_bar=false"], None, [[]]),
    ],
)
def test_cli_replaces_lightnings_default_summary_and_bar_only(args, summary, bars, monkeypatch):
    monkeypatch.setattr("distill.console.interactive", lambda stream=None: True)  # a terminal: a bar
    cli = DistillCLI(args=["-c", TEACHER_CFG, "--trainer.logger=false", *args], run=False)
    summaries = [type(c) for c in cli.trainer.callbacks if isinstance(c, ModelSummary)]
    assert summaries == ([] if summary is None else [summary])
    progress = [type(c) for c in cli.trainer.callbacks if isinstance(c, ProgressBar)]
    assert progress in bars
