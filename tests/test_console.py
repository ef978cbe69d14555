"""What the entry points print: plain progress lines when stdout is not a terminal (a file, a pipe, CI, a
cluster job), and no dependency noise (diffusers' accelerate hint, Lightning's tips, dependencies' deprecation
warnings) unless DISTILL_VERBOSE=1."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_COND_UNET, cpu_trainer, random_digits_loader, tiny_cond_unet

from distill.callbacks import PlainProgressBar
from distill.console import format_duration, interactive, quiet_third_party

ROOT = Path(__file__).resolve().parents[1]
NOISE = (
    "accelerate",
    "litlogger",
    "litmodels",
    "Tip",
    "FutureWarning",
    "DeprecationWarning",
    "is deprecated",
)


def _tiny_kd_config(tmp_path: Path, teacher_dir: Path, **trainer) -> Path:
    """``distill fit`` of a tiny KD run (the conftest teacher, a fresh tiny student, 8 px digits): 6 steps, a
    validation at step 3, TensorBoard logs into ``tmp_path``."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 6,
            "log_every_n_steps": 2,
            "val_check_interval": 3,
            "check_val_every_n_epoch": None,
            "limit_val_batches": 1,
            "num_sanity_val_steps": 0,
            "enable_checkpointing": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path), "name": "tiny"},
            },
            **trainer,
        },
        "model": {
            "class_path": "distill.KnowledgeDistillation",
            "init_args": {
                "teacher": {
                    "class_path": "teachers.DiffusionTeacher.from_pretrained",
                    "init_args": {"path": str(teacher_dir)},
                },
                "student": {"class_path": "diffusers.UNet2DConditionModel", "init_args": TINY_COND_UNET},
                "init_from_teacher": False,
                "samples_per_class": 0,
                "evaluator": None,
            },
        },
        "data": {"class_path": "distill.DigitsDataModule", "init_args": {"image_size": 8, "batch_size": 8}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_with_output_to_a_file_prints_progress_lines_and_no_dependency_noise(tmp_path, tiny_teacher_dir):
    """`distill fit > log 2>&1`: the progress is in the file as plain lines, and nothing of the dependencies'
    hints, tips or deprecation warnings is."""
    config = _tiny_kd_config(tmp_path, tiny_teacher_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("DISTILL_VERBOSE", "PYTHONWARNINGS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    log = tmp_path / "fit.log"
    with log.open("w") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "distill.cli", "fit", "-c", str(config)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
            timeout=600,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    lines = text.splitlines()
    assert "training to step 6: a line every 2 steps" in lines
    steps = [int(m.group(1)) for m in re.finditer(r"^step (\d+)/6  train/loss \d", text, re.MULTILINE)]
    assert steps == [2, 4, 6]
    assert re.search(r"^step 2/6  .*(it/s|s/it)  eta \d+:\d\d$", text, re.MULTILINE)
    assert any(line.startswith("validation at step 3 (1 batch)") for line in lines)
    assert any(line.startswith("validation done in ") for line in lines)
    assert "\r" not in text and "━" not in text  # no bar frames
    for word in NOISE:
        assert word not in text, f"{word!r} in the output:\n{text}"
    assert "Seed set to 0" in lines[0]  # the first line is the run's, not a dependency's hint


def test_plain_progress_bar_lines_and_interval(capsys, tiny_teacher_dir):
    from distill.methods.knowledge import KnowledgeDistillation
    from teachers import DiffusionTeacher

    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    kd = KnowledgeDistillation(
        teacher, tiny_cond_unet(seed=1), init_from_teacher=False, samples_per_class=0, evaluator=None
    )
    bar = PlainProgressBar(every_n_steps=3)
    trainer = cpu_trainer(7, callbacks=[bar], enable_progress_bar=True)
    trainer.fit(kd, random_digits_loader(n=64, batch_size=8))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "training to step 7: a line every 3 steps"
    assert [line.split()[1] for line in out[1:]] == ["3/7", "6/7", "7/7"]  # and the last step
    assert "eta" not in out[-1] and "eta" in out[1]


@pytest.mark.parametrize(
    ("max_steps", "log_every", "every"),
    [(500, 25, 25), (5000, 50, 100), (30, 1, 1), (2, 50, 50), (10_000, 1, 200)],
)
def test_plain_progress_bar_prints_at_most_about_fifty_training_lines(max_steps, log_every, every):
    trainer = cpu_trainer(max_steps, log_every_n_steps=log_every)
    assert PlainProgressBar().interval(trainer) == every
    assert PlainProgressBar(max_lines=10).interval(trainer) == max(log_every, -(-max_steps // 10))


def test_cli_uses_plain_lines_when_stdout_is_not_a_terminal(monkeypatch):
    from distill.callbacks import StepRichProgressBar, StepTQDMProgressBar
    from distill.lightning_cli import DistillCLI

    config = str(ROOT / "configs" / "digits" / "teacher.yaml")
    monkeypatch.setattr("distill.console.interactive", lambda stream=None: False)
    cli = DistillCLI(args=["-c", config, "--trainer.logger=false"], run=False)
    assert isinstance(cli.trainer.progress_bar_callback, PlainProgressBar)
    monkeypatch.setattr("distill.console.interactive", lambda stream=None: True)
    cli = DistillCLI(args=["-c", config, "--trainer.logger=false"], run=False)
    assert isinstance(cli.trainer.progress_bar_callback, StepRichProgressBar | StepTQDMProgressBar)


def test_interactive_and_format_duration(tmp_path):
    with (tmp_path / "f").open("w") as handle:
        assert not interactive(handle)
    assert not interactive(object())
    assert [format_duration(s) for s in (0, 59.6, 119, 3600 + 62)] == ["0:00", "1:00", "1:59", "1:01:02"]


def test_evaluate_model_prints_plain_progress_lines_when_not_a_terminal(capsys):
    from distill.pipelines import plain_progress

    starts = list(
        plain_progress(range(0, 1000, 100), desc="teacher, DDIM 4 steps", total=1000, batch_size=100)
    )
    assert starts == list(range(0, 1000, 100))
    out = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in out] == [
        f"teacher, DDIM 4 steps: {n}/1000 samples" for n in range(100, 1001, 100)
    ]
    list(plain_progress(range(0, 950, 500), desc="x", total=950, batch_size=500))
    assert [line.split("  ")[0] for line in capsys.readouterr().out.splitlines()] == [
        "x: 500/950 samples",
        "x: 950/950 samples",
    ]


def _emit(module: str, category: type[Warning]) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_third_party()
        warnings.warn_explicit("something is deprecated", category, filename="x.py", lineno=1, module=module)
    return caught


@pytest.mark.parametrize("category", [FutureWarning, DeprecationWarning])
def test_dependencies_deprecations_are_silenced_and_ours_are_not(monkeypatch, category):
    monkeypatch.delenv("DISTILL_VERBOSE", raising=False)
    monkeypatch.setattr(sys, "warnoptions", [])
    assert _emit("torch.jit._script", category) == []
    assert _emit("lightning.pytorch.utilities._pytree", category) == []
    assert len(_emit("distill.methods.base", category)) == 1
    assert len(_emit("teachers", category)) == 1
    assert len(_emit("torch.nn", UserWarning)) == 1  # other categories are left alone
    monkeypatch.setenv("DISTILL_VERBOSE", "1")
    assert len(_emit("torch.jit._script", category)) == 1


def test_dependency_hints_are_dropped_from_their_loggers(monkeypatch):
    monkeypatch.delenv("DISTILL_VERBOSE", raising=False)
    quiet_third_party()
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    for name in ("diffusers.models.modeling_utils", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        handler = Keep()
        logger.addHandler(handler)
        try:
            logger.warning("Cannot initialize model because `accelerate` was not found in the environment.")
            logger.warning("💡 Tip: For seamless cloud logging, try installing litlogger")
            logger.warning("a real warning")
        finally:
            logger.removeHandler(handler)
    assert records == ["a real warning", "a real warning"]
    monkeypatch.setenv("DISTILL_VERBOSE", "1")
    assert quiet_third_party() is False
    assert quiet_third_party(force=True) is True


def test_tensor_metric_values_are_formatted():
    from distill.callbacks import _format_value

    assert _format_value(torch.tensor(0.012345678)) == "0.01235"
    assert _format_value(3) == "3"
