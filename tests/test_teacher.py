"""The frozen teacher: loading, the predict contract, guidance, frozenness, dtypes, errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SCHEDULER, save_teacher_folder, tiny_cond_unet, tiny_unet2d

from teachers import DiffusionTeacher
from teachers.parameterization import x0_from_v
from teachers.schedule import NoiseSchedule


def test_from_pretrained_pipeline_and_model_folders(tiny_teacher_dir, tmp_path):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    assert teacher.prediction_type == "v_prediction"
    assert teacher.num_classes == 10 and teacher.null_class == 10
    assert teacher.in_channels == 1 and teacher.sample_size == 8
    # a model folder with its scheduler config beside it
    model_dir = tmp_path / "model"
    tiny_unet2d().save_pretrained(model_dir)
    (model_dir / "scheduler_config.json").write_text(json.dumps(SCHEDULER))
    plain = DiffusionTeacher.from_pretrained(model_dir)
    assert type(plain.unet).__name__ == "UNet2DModel"
    # subfolder of a pipeline folder
    sub = DiffusionTeacher.from_pretrained(tiny_teacher_dir, subfolder="unet")
    assert torch.equal(next(sub.unet.parameters()), next(teacher.unet.parameters()))


def test_schedule_comes_from_the_saved_scheduler(tiny_teacher_dir):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    from diffusers import DDPMScheduler

    ref = DDPMScheduler.from_pretrained(tiny_teacher_dir / "scheduler")
    torch.testing.assert_close(teacher.schedule.alphas_cumprod.float(), ref.alphas_cumprod, atol=0, rtol=0)


def test_frozen_at_construction(tiny_teacher_dir):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    assert not teacher.training and not teacher.unet.training
    assert all(not p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    pred = teacher.predict(x, torch.tensor([10, 900]), torch.tensor([1, 2]))
    assert not pred.x0.requires_grad  # targets come without a graph


def test_predict_is_consistent_with_the_raw_network(tiny_teacher_dir):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, generator=gen)
    t = torch.tensor([5, 500, 995])
    labels = torch.tensor([0, 4, 9])
    pred = teacher.predict(x, t, labels)
    with torch.no_grad():
        v = teacher.unet(x, t, encoder_hidden_states=None, class_labels=labels).sample
    alpha, sigma = teacher.schedule.alpha_sigma(t)
    torch.testing.assert_close(pred.v, v)
    torch.testing.assert_close(pred.x0, x0_from_v(z=x, v=v, alpha=alpha, sigma=sigma))
    # x0, eps rebuild the input: z = alpha x0 + sigma eps
    a, s = alpha.view(-1, 1, 1, 1), sigma.view(-1, 1, 1, 1)
    torch.testing.assert_close(a * pred.x0 + s * pred.eps, x, atol=1e-5, rtol=0)


def test_guidance_in_one_batched_forward_equals_two_forwards(tiny_teacher_dir):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 8, 8, generator=gen)
    t = torch.tensor([100, 300, 600, 900])
    labels = torch.tensor([1, 3, 5, 7])
    calls = []
    hook = teacher.unet.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    guided = teacher.predict(x, t, labels, guidance_scale=3.0)
    hook.remove()
    assert calls == [8], "guidance must run cond and uncond in one batched forward"
    cond = teacher.predict(x, t, labels)
    uncond = teacher.predict(x, t, torch.full_like(labels, 10))
    torch.testing.assert_close(guided.x0, uncond.x0 + 3.0 * (cond.x0 - uncond.x0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(guided.eps, uncond.eps + 3.0 * (cond.eps - uncond.eps), atol=1e-5, rtol=1e-5)
    # per-sample guidance scales, and w = 1 is the conditional prediction
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    per_sample = teacher.predict(x, t, labels, guidance_scale=w)
    torch.testing.assert_close(per_sample.x0[2], guided.x0[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_sample.x0[0], cond.x0[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(teacher.predict(x, t, labels, guidance_scale=1.0).x0, cond.x0)


def test_guidance_without_null_class_is_refused(tmp_path):
    path = tmp_path / "uncond"
    save_teacher_folder(path, tiny_unet2d(num_class_embeds=None))
    teacher = DiffusionTeacher.from_pretrained(path)
    x = torch.randn(2, 1, 8, 8)
    assert teacher.predict(x, torch.tensor([1, 2])).x0.shape == x.shape
    with pytest.raises(ValueError, match="guidance"):
        teacher.predict(x, torch.tensor([1, 2]), None, guidance_scale=2.0)


def test_half_precision_teacher(tiny_teacher_dir):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir, dtype="bfloat16")
    assert teacher.dtype == torch.bfloat16
    x = torch.randn(2, 1, 8, 8)
    pred = teacher.predict(x, torch.tensor([100, 800]), torch.tensor([0, 1]), guidance_scale=2.0)
    assert pred.x0.dtype == torch.float32 and torch.isfinite(pred.x0).all()
    full = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    ref = full.predict(x, torch.tensor([100, 800]), torch.tensor([0, 1]), guidance_scale=2.0)
    assert (pred.v - ref.v).abs().max() < 0.1


def test_missing_path_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*does not exist.*pipeline folder"):
        DiffusionTeacher.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        DiffusionTeacher.from_pretrained(tmp_path / "empty")
    model_dir = tmp_path / "no_scheduler"
    tiny_unet2d().save_pretrained(model_dir)
    with pytest.raises(FileNotFoundError, match="scheduler config"):
        DiffusionTeacher.from_pretrained(model_dir)
    with pytest.raises(FileNotFoundError, match="built-in"):
        DiffusionTeacher.from_pretrained("builtin:cifar")


def test_unsupported_class_is_refused(tmp_path):
    path = tmp_path / "vae"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    (path / "scheduler_config.json").write_text(json.dumps(SCHEDULER))
    with pytest.raises(ValueError, match="AutoencoderKL"):
        DiffusionTeacher.from_pretrained(path)


def test_save_pretrained_round_trip(tiny_teacher_dir, tmp_path):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    teacher.save_pretrained(tmp_path / "copy")
    again = DiffusionTeacher.from_pretrained(tmp_path / "copy")
    for a, b in zip(teacher.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert again.schedule.config["prediction_type"] == "v_prediction"


def test_schedule_object_matches_module_math():
    schedule = NoiseSchedule.from_scheduler_config(SCHEDULER)
    unet = tiny_cond_unet()
    teacher = DiffusionTeacher(unet, SCHEDULER)
    torch.testing.assert_close(teacher.schedule.alphas_cumprod, schedule.alphas_cumprod)
