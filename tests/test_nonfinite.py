"""Non-finite losses: "stop" names the step and the loss terms; "skip" leaves student, EMA and target untouched,
counts the batch, and the count survives a checkpoint."""

from __future__ import annotations

import pytest
import torch
from conftest import cpu_trainer, tiny_cond_unet
from torch.utils.data import DataLoader, TensorDataset

from distill.methods.consistency import ConsistencyDistillation
from distill.methods.knowledge import KnowledgeDistillation
from teachers import DiffusionTeacher


def _loader_with_a_corrupt_batch(bad_batch: int = 1, batches: int = 4, batch_size: int = 8):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batches * batch_size, 1, 8, 8, generator=gen) * 2 - 1
    images[bad_batch * batch_size] = float("nan")  # one corrupt image
    labels = torch.arange(batches * batch_size) % 10
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size)


def _finite(module: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in module.parameters())


def _kd(teacher_dir, **kwargs):
    teacher = DiffusionTeacher.from_pretrained(teacher_dir)
    return KnowledgeDistillation(
        teacher, tiny_cond_unet(seed=4, block_out_channels=[16, 16]), samples_per_class=0, **kwargs
    )


def test_stop_names_the_step_and_the_terms(tiny_teacher_dir):
    module = _kd(tiny_teacher_dir)
    with pytest.raises(FloatingPointError, match=r"global step 1 \(batch 1\).*'loss'.*nonfinite: skip"):
        cpu_trainer(4).fit(module, train_dataloaders=_loader_with_a_corrupt_batch())


def test_skip_leaves_every_copy_untouched_and_counts(tiny_teacher_dir, tmp_path):
    module = _kd(tiny_teacher_dir, nonfinite="skip")
    trainer = cpu_trainer(3)
    trainer.fit(module, train_dataloaders=_loader_with_a_corrupt_batch())
    assert module.nonfinite_steps == 1
    assert trainer.global_step == 3  # the skipped batch made no optimizer step; three good ones did
    assert _finite(module.student) and _finite(module.ema.module)
    path = tmp_path / "skip.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=True)["nonfinite_steps"] == 1
    fresh = _kd(tiny_teacher_dir, nonfinite="skip")
    fresh.on_load_checkpoint(torch.load(path, weights_only=True))
    assert fresh.nonfinite_steps == 1


def test_skip_keeps_the_consistency_target_finite(tiny_teacher_dir):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    module = ConsistencyDistillation(
        teacher,
        tiny_cond_unet(seed=3, time_cond_proj_dim=8),
        guidance_max=2.0,
        samples_per_class=0,
        nonfinite="skip",
    )
    cpu_trainer(3).fit(module, train_dataloaders=_loader_with_a_corrupt_batch())
    assert module.nonfinite_steps == 1
    assert _finite(module.student) and _finite(module.target.module) and _finite(module.ema.module)


def test_unknown_policy_is_refused(tiny_teacher_dir):
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        _kd(tiny_teacher_dir, nonfinite="ignore")
