"""A run refused before its first step writes nothing: no new run folder (version_N with config.yaml and an event
file, nor lightning_logs/), and an existing folder is left as it was. Without a logger nothing lands in the
working directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_COND_UNET

from distill.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "digits"


def _config(tmp_path, teacher_dir) -> str:
    """A KD run small enough to start in a few seconds: the tiny teacher, a tiny student, 8x8 digits."""
    student = "\n".join(f"        {k}: {v}" for k, v in TINY_COND_UNET.items())
    path = tmp_path / "kd_tiny.yaml"
    path.write_text(
        f"""seed_everything: 0
trainer:
  accelerator: cpu
  max_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  limit_val_batches: 0
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args:
      save_dir: {tmp_path / "runs"}
      name: kd
model:
  class_path: distill.KnowledgeDistillation
  init_args:
    teacher:
      class_path: teachers.DiffusionTeacher.from_pretrained
      init_args:
        path: {teacher_dir}
    student:
      class_path: diffusers.UNet2DConditionModel
      init_args:
{student}
    init_from_teacher: false
    samples_per_class: 0
    eval_teacher_steps: null
data:
  class_path: distill.DigitsDataModule
  init_args:
    image_size: 8
    batch_size: 8
"""
    )
    return str(path)


def _foreign_checkpoint(tmp_path) -> str:
    """A real Lightning checkpoint of another module (a one-layer regression)."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    class Other(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(Other(), DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=2))
    path = tmp_path / "other_method.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


REFUSALS = {
    "image size": (["--data.init_args.image_size=16"], ValueError, ["data.image_size=16", "sample_size=8"]),
    "negative lr": (
        ["--model.init_args.optimizer=torch.optim.AdamW", "--model.init_args.optimizer.init_args.lr=-0.001"],
        ValueError,
        ["model.init_args.optimizer.init_args.lr", "-0.001"],
    ),
    "another method's checkpoint": (None, RuntimeError, ["checkpoint does not match this method"]),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_run_leaves_no_run_folder(case, tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides, error, fragments = REFUSALS[case]
    if overrides is None:
        overrides = [f"--ckpt_path={_foreign_checkpoint(tmp_path)}"]
    with pytest.raises(error) as info:
        main(["fit", "-c", _config(tmp_path, tiny_teacher_dir), *overrides])
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert not (tmp_path / "runs").exists(), list((tmp_path / "runs").rglob("*"))
    assert not (tmp_path / "lightning_logs").exists() and not (tmp_path / "config.yaml").exists()


def test_a_refused_run_into_an_existing_folder_leaves_it_as_it_was(tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    existing = tmp_path / "runs" / "kd" / "version_0"
    existing.mkdir(parents=True)
    (existing / "notes.txt").write_text("mine")
    (tmp_path / "runs" / "kd" / "version_3").mkdir()
    with pytest.raises(ValueError, match=r"data\.image_size=16"):
        main(
            [
                "fit",
                "-c",
                _config(tmp_path, tiny_teacher_dir),
                "--data.init_args.image_size=16",
                "--trainer.logger.init_args.version=0",
            ]
        )
    assert (existing / "notes.txt").read_text() == "mine"
    assert not (existing / "config.yaml").exists()  # a rerun into it is not blocked by a stale config
    assert sorted(p.name for p in (tmp_path / "runs" / "kd").iterdir()) == ["version_0", "version_3"]


def test_the_default_logger_folder_is_not_left_either(tiny_teacher_dir, tmp_path, monkeypatch):
    """No logger configured: Lightning's default writes lightning_logs/version_0 under default_root_dir."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    with pytest.raises(ValueError, match=r"data\.image_size=16"):
        main(
            [
                "fit",
                "-c",
                _config(tmp_path, tiny_teacher_dir),
                "--trainer.logger=true",
                f"--trainer.default_root_dir={root}",
                "--data.init_args.image_size=16",
            ]
        )
    assert not root.exists() and not (tmp_path / "lightning_logs").exists()


@pytest.mark.slow  # a whole (one-step) run
def test_a_run_that_trained_keeps_its_folder(tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", _config(tmp_path, tiny_teacher_dir), "--trainer.enable_checkpointing=false"])
    run = tmp_path / "runs" / "kd" / "version_0"
    assert (run / "config.yaml").is_file() and list(run.glob("events.out.tfevents.*"))


@pytest.mark.parametrize("subcommand", ["test", "validate"])
def test_no_logger_writes_nothing_into_the_working_directory(subcommand, tmp_path, monkeypatch):
    """`distill test --trainer.logger=false` used to drop config.yaml into the working directory."""
    monkeypatch.chdir(tmp_path)
    main(
        [
            subcommand,
            "-c",
            str(CONFIGS / "teacher.yaml"),
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.limit_{'test' if subcommand == 'test' else 'val'}_batches=0",
        ]
    )
    assert list(tmp_path.iterdir()) == []
