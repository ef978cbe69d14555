"""Bad input fails before any step, naming the argument or path and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import main

TEACHER_CFG = str(Path(__file__).resolve().parents[1] / "configs" / "digits" / "teacher.yaml")


def test_unknown_config_key_names_the_key(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "-c", TEACHER_CFG, "--model.init_args.ema_decayy=0.9"])
    assert info.value.code != 0
    err = capsys.readouterr().err
    assert "ema_decayy" in err


def test_unknown_key_in_a_yaml_file_names_the_key(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("model:\n  init_args:\n    num_clases: 10\n")
    with pytest.raises(SystemExit):
        main(["fit", "-c", TEACHER_CFG, "-c", str(cfg)])
    assert "num_clases" in capsys.readouterr().err


def test_missing_teacher_path_fails_before_any_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "kd.yaml"
    cfg.write_text(
        "model:\n"
        "  class_path: distill.methods.base.DistillationModule\n"
        "  init_args:\n"
        "    teacher:\n"
        "      class_path: teachers.DiffusionTeacher.from_pretrained\n"
        f"      init_args: {{path: {tmp_path / 'no_such_teacher'}}}\n"
        "    student:\n"
        "      class_path: diffusers.UNet2DModel\n"
        "      init_args: {sample_size: 8, in_channels: 1, out_channels: 1}\n"
        "data:\n"
        "  class_path: distill.DigitsDataModule\n"
    )
    with pytest.raises((ValueError, FileNotFoundError, SystemExit)) as info:
        main(["fit", "-c", str(cfg), f"--trainer.default_root_dir={tmp_path}"])
    message = str(info.value) + str(getattr(info.value, "__context__", ""))
    assert "no_such_teacher" in message and "does not exist" in message
    assert not list(tmp_path.rglob("*.ckpt"))


def test_image_size_mismatch_fails_before_any_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"data.image_size=8 but model.sample_size=16.*image_size=16"):
        main(
            [
                "fit",
                "-c",
                TEACHER_CFG,
                "--data.init_args.image_size=8",
                f"--trainer.default_root_dir={tmp_path}",
                "--trainer.logger=false",
                "--trainer.enable_progress_bar=false",
            ]
        )
    assert not list(tmp_path.rglob("*.ckpt"))
