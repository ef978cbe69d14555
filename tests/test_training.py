"""DiffusionTraining: the loss learns, EMA tracks, label dropout, export loads as a teacher."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import SCHEDULER, tiny_cond_unet, tiny_unet2d
from diffusers import DDPMScheduler
from torch.utils.data import DataLoader, TensorDataset

from distill.methods.training import DiffusionTraining
from teachers import DiffusionTeacher


def _module(**kw):
    return DiffusionTraining(tiny_cond_unet(), DDPMScheduler(**SCHEDULER), samples_per_class=0, **kw)


def _loader():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=gen).mul(2).sub(1)
    return DataLoader(TensorDataset(x, torch.arange(64) % 10), batch_size=16)


def test_fit_lowers_the_loss_updates_ema_and_exports_a_teacher(tmp_path):
    module = _module(optimizer=lambda p: torch.optim.Adam(p, lr=2e-3), ema_decay=0.9)
    images, labels = next(iter(_loader()))
    with torch.no_grad():
        before = module.diffusion_loss(images, labels, generator=torch.Generator().manual_seed(1))
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_steps=40,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(module, _loader())
    with torch.no_grad():
        after = module.diffusion_loss(images, labels, generator=torch.Generator().manual_seed(1))
    assert after < 0.85 * before
    assert int(module.ema.num_updates) == 40
    ema_p = next(module.ema.module.parameters())
    raw_p = next(module.model.parameters())
    assert not torch.equal(ema_p, raw_p)
    module.save_pretrained(tmp_path / "export")
    teacher = DiffusionTeacher.from_pretrained(tmp_path / "export")
    assert torch.equal(next(teacher.unet.parameters()), ema_p)
    assert teacher.prediction_type == "v_prediction"
    samples = module.generate(4, labels=torch.arange(4), steps=2, guidance_scale=2.0)
    assert samples.shape == (4, 1, 8, 8) and torch.isfinite(samples).all()


def test_label_dropout_uses_the_null_class():
    labels = torch.arange(1000) % 10
    from distill.objectives import apply_keep, draw_keep
    from distill.rng import GeneratorRandom

    keep = draw_keep(
        GeneratorRandom(torch.Generator().manual_seed(0)), batch=len(labels), cond=labels, prob=0.25
    )
    dropped = apply_keep(labels, keep, null_cond=lambda c: torch.full_like(c, 10))
    frac = (dropped == 10).float().mean().item()
    assert 0.2 < frac < 0.3
    assert torch.equal(dropped[dropped != 10], labels[dropped != 10])


def test_min_snr_weighting_changes_the_loss():
    module = _module()
    weighted = _module(min_snr_gamma=5.0)
    weighted.model.load_state_dict(module.model.state_dict())
    x, y = next(iter(_loader()))
    with torch.no_grad():
        a = module.diffusion_loss(x, y, generator=torch.Generator().manual_seed(0))
        b = weighted.diffusion_loss(x, y, generator=torch.Generator().manual_seed(0))
    assert a != b and torch.isfinite(b)


def test_class_count_must_match_the_embeddings():
    with pytest.raises(ValueError, match=r"num_class_embeds=11, expected num_classes \+ 1 = 6"):
        DiffusionTraining(tiny_cond_unet(), DDPMScheduler(**SCHEDULER), num_classes=5)
    with pytest.raises(ValueError, match="no class embeddings"):
        DiffusionTraining(tiny_unet2d(num_class_embeds=None), DDPMScheduler(**SCHEDULER), num_classes=10)
    unconditional = DiffusionTraining(
        tiny_unet2d(num_class_embeds=None), DDPMScheduler(**SCHEDULER), num_classes=None, samples_per_class=0
    )
    x, _ = next(iter(_loader()))
    assert torch.isfinite(unconditional.diffusion_loss(x, None))
