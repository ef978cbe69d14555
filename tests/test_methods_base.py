"""The teacher-owning base: checkpoints hold no teacher tensor, the teacher never changes, loads are checked."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_cond_unet
from torch.utils.data import DataLoader, TensorDataset

from distill.methods.base import DistillationModule
from teachers import DiffusionTeacher
from teachers.network import denoise
from teachers.schedule import q_sample


class OutputMatching(DistillationModule):
    """Output distillation on the x0-prediction: the smallest real method on the base class."""

    def training_losses(self, batch):
        images, labels = batch
        gen = torch.Generator().manual_seed(int(self.global_step))
        t = torch.randint(0, 1000, (images.shape[0],), generator=gen)
        alpha, sigma = self.teacher.schedule.alpha_sigma(t)
        z = q_sample(x0=images, eps=torch.randn(images.shape, generator=gen), alpha=alpha, sigma=sigma)
        target = self.teacher.predict(z, t, labels).x0
        student = denoise(self.student, self.teacher.schedule, z, t, labels).x0
        return {"loss": F.mse_loss(student, target)}


def _loader(n=16):
    gen = torch.Generator().manual_seed(0)
    return DataLoader(
        TensorDataset(torch.randn(n, 1, 8, 8, generator=gen), torch.arange(n) % 10), batch_size=4
    )


def _trainer(tmp_path, **kw):
    return L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def test_fit_never_changes_the_teacher_and_checkpoints_hold_none_of_it(tiny_teacher_dir, tmp_path):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = OutputMatching(teacher, tiny_cond_unet(seed=1), optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    student_before = [p.clone() for p in module.student.parameters()]
    trainer = _trainer(tmp_path, max_steps=3)
    trainer.fit(module, _loader())
    assert not module.teacher.training, "the teacher must stay in eval mode through fit"
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), f"teacher tensor {key} changed during fit"
    assert any(
        not torch.equal(a, b) for a, b in zip(student_before, module.student.parameters(), strict=True)
    )
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}
    ckpt_path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt_path)
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert not [k for k in ckpt["state_dict"] if k.startswith("teacher.")]
    assert any(k.startswith("student.") for k in ckpt["state_dict"])
    assert any(k.startswith("ema.") for k in ckpt["state_dict"])
    assert set(module._ddp_params_and_buffers_to_ignore) >= {f"teacher.{k}" for k in teacher.state_dict()}

    # resuming restores the student and EMA and keeps the live teacher
    again = OutputMatching(
        DiffusionTeacher.from_pretrained(tiny_teacher_dir),
        tiny_cond_unet(seed=7),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.5),
    )
    trainer2 = _trainer(tmp_path, max_steps=3)
    trainer2.fit(again, _loader(), ckpt_path=ckpt_path)
    for a, b in zip(again.student.parameters(), module.student.parameters(), strict=True):
        assert torch.equal(a, b)


def test_loading_refuses_anything_but_missing_teacher_keys(tiny_teacher_dir, tmp_path):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    module = OutputMatching(teacher, tiny_cond_unet(seed=1))
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(module, _loader(4))
    ckpt_path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt_path)
    ckpt = torch.load(ckpt_path, weights_only=False)

    good = dict(ckpt)
    good["state_dict"] = dict(ckpt["state_dict"])
    module.on_load_checkpoint(good)  # fills the teacher back in
    assert set(good["state_dict"]) == set(module.state_dict())

    missing = dict(ckpt)
    missing["state_dict"] = {
        k: v for k, v in ckpt["state_dict"].items() if not k.startswith("student.conv_in")
    }
    with pytest.raises(RuntimeError, match=r"missing \['student.conv_in"):
        module.on_load_checkpoint(missing)
    unexpected = dict(ckpt)
    unexpected["state_dict"] = {**ckpt["state_dict"], "projection.weight": torch.zeros(1)}
    with pytest.raises(RuntimeError, match=r"unexpected \['projection.weight'\]"):
        module.on_load_checkpoint(unexpected)
    with_teacher = dict(ckpt)
    with_teacher["state_dict"] = {**ckpt["state_dict"], **teacher.state_dict(prefix="teacher.")}
    with pytest.raises(RuntimeError, match="teacher tensors"):
        module.on_load_checkpoint(with_teacher)


def test_teacher_type_and_identity_are_checked(tiny_teacher_dir):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    with pytest.raises(TypeError, match="DiffusionTeacher"):
        OutputMatching(teacher.unet, tiny_cond_unet())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="separate network"):
        OutputMatching(teacher, teacher.unet)
