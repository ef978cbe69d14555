"""Consistency distillation: the teacher solver step, boundary, target EMA, checkpoints, sampling, bad input."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import random_digits_loader, save_teacher_folder, tiny_cond_unet, tiny_unet2d

from distill.methods.consistency import ConsistencyDistillation
from distill.objectives import consistency_function, teacher_solver_step, w_embedding
from teachers import DiffusionTeacher
from teachers.parameterization import cfg_combine, guidance_scale_embedding


def _loader(n=32):
    return random_digits_loader(n)


@pytest.fixture
def teacher(tiny_teacher_dir):
    return DiffusionTeacher.from_pretrained(tiny_teacher_dir)


def _method(teacher, **kwargs):
    kwargs.setdefault("samples_per_class", 0)
    return ConsistencyDistillation(
        teacher, tiny_cond_unet(seed=3, time_cond_proj_dim=8), guidance_max=3.0, **kwargs
    )


def test_teacher_solver_step_is_ddim_with_lcm_form_cfg(teacher):
    z = torch.randn(4, 1, 8, 8)
    s, t = torch.tensor([999, 519, 259, 19]), torch.tensor([979, 499, 239, 0])
    labels, w = torch.tensor([1, 2, 3, 4]), torch.tensor([0.0, 0.5, 1.0, 2.0])
    out = teacher_solver_step(teacher, z, s, t, labels, w, guided=True)
    with torch.no_grad():
        c = teacher.predict(z, s, labels)
        u = teacher.predict(z, s, torch.full_like(labels, teacher.null_class))
    x0 = c.x0 + w[:, None, None, None] * (c.x0 - u.x0)  # LCM: cond + w (cond - uncond)
    eps = cfg_combine(cond=c.eps, uncond=u.eps, guidance_scale=1 + w)  # = the usual scale 1 + w
    alpha, sigma = teacher.schedule.alpha_sigma(t)
    expected = alpha[:, None, None, None] * x0 + sigma[:, None, None, None] * eps
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_boundary_target_at_t0_is_the_solver_output_and_loss_trains(teacher):
    cd = _method(teacher)
    z = torch.randn(2, 1, 8, 8)
    zero = torch.zeros(2, dtype=torch.long)
    w_emb = w_embedding(torch.zeros(2), cd.embed_dim)
    f = consistency_function(
        cd.target.module, teacher.schedule, z, zero, torch.tensor([1, 2]), w_emb, cd.options
    )
    torch.testing.assert_close(f, z)
    images, labels = next(iter(_loader()))
    torch.manual_seed(0)
    losses = cd.training_losses((images, labels))
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0
    losses["loss"].backward()
    assert all(p.grad is not None for p in cd.student.parameters() if p.requires_grad)
    assert all(p.grad is None for p in cd.target.parameters())  # the target never gets gradients
    assert all(p.grad is None for p in cd.teacher.parameters())


def test_target_network_follows_the_student_at_its_rate(teacher):
    cd = _method(teacher, target_decay=0.9)
    with torch.no_grad():
        for p in cd.student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in cd.target.module.parameters()]
    cd.after_step(steps_done=1)
    for old, new, student in zip(before, cd.target.module.parameters(), cd.student.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * student)


def test_one_step_generation_is_one_consistency_evaluation(teacher):
    cd = _method(teacher).eval()
    noise = torch.randn(3, 1, 8, 8)
    labels = torch.tensor([0, 5, 9])
    out = cd.sample(labels, noise, steps=1, guidance_scale=1.5)
    with torch.no_grad():
        w_emb = guidance_scale_embedding(w=torch.full((3,), 0.5), dim=8)
        x0 = consistency_function(
            cd.eval_student(), teacher.schedule, noise, torch.full((3,), 999), labels, w_emb, cd.options
        )
    # the sampler clips the x0-prediction to [-1, 1]; at t = 999 c_skip is ~0 so f is the x0-prediction
    torch.testing.assert_close(out, x0.clamp(-1, 1), atol=1e-4, rtol=0)
    two = cd.sample(labels, noise, steps=2)
    assert two.shape == noise.shape and not torch.allclose(two, out)


def test_checkpoint_holds_student_ema_and_target_never_the_teacher(teacher, tmp_path):
    cd = _method(teacher)
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(cd, train_dataloaders=_loader())
    path = tmp_path / "cd.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert not [k for k in state if k.startswith("teacher.")]
    assert [k for k in state if k.startswith("target.")] and [k for k in state if k.startswith("ema.")]
    fresh = _method(DiffusionTeacher.from_pretrained(teacher.source))
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    for a, b in zip(fresh.target.module.parameters(), cd.target.module.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(
        next(cd.target.module.parameters()), next(cd.student.parameters())
    )  # target lags the student


def test_bad_configurations_are_refused_before_training(teacher, tmp_path):
    with pytest.raises(ValueError, match="need a student with a timestep_cond input"):
        ConsistencyDistillation(teacher, tiny_cond_unet(seed=1), guidance_min=1.0, guidance_max=2.0)
    with pytest.raises(ValueError, match="does not divide the teacher's 1000"):
        _method(teacher, original_steps=30)
    with pytest.raises(ValueError, match="need 1 <= guidance_min <= guidance_max"):
        ConsistencyDistillation(
            teacher, tiny_cond_unet(time_cond_proj_dim=8), guidance_min=3.0, guidance_max=2.0
        )
    with pytest.raises(ValueError, match="loss must be one of"):
        _method(teacher, loss="l1")
    save_teacher_folder(tmp_path / "uncond", tiny_unet2d(num_class_embeds=None))
    uncond = DiffusionTeacher.from_pretrained(tmp_path / "uncond")
    with pytest.raises(ValueError, match="needs a teacher with an unconditional branch"):
        ConsistencyDistillation(
            uncond, tiny_unet2d(seed=2, num_class_embeds=None), guidance_min=2.0, guidance_max=2.0
        )


def test_export_writes_an_lcm_scheduler_and_the_evaluator_samples_it_as_a_consistency_model(
    teacher, tmp_path
):
    from diffusers import LCMScheduler

    from distill.methods.evaluation import GenerativeEvaluation
    from distill.metrics import DigitsEvaluator

    cd = _method(teacher, original_steps=25).eval()
    cd.save_pretrained(tmp_path / "export")
    scheduler = LCMScheduler.from_pretrained(tmp_path / "export" / "scheduler")
    assert (
        scheduler.config.original_inference_steps == 25 and scheduler.config.prediction_type == "v_prediction"
    )
    scheduler.set_timesteps(2)
    loaded = DiffusionTeacher.from_pretrained(tmp_path / "export")
    assert loaded.schedule.scheduler_class == "LCMScheduler"
    evaluation = GenerativeEvaluation(loaded, DigitsEvaluator.__new__(DigitsEvaluator), guidance_scale=1.5)
    assert evaluation.resolved_sampler == "consistency"
    seeds, indices, labels = torch.zeros(3, dtype=torch.long), torch.arange(3), torch.tensor([2, 5, 8])
    # one step injects no noise: the evaluator's sampler and the method's agree exactly (w = 1.5 - 1 embedded)
    from teachers.sampling import per_sample_noise

    noise = per_sample_noise(seeds=seeds, indices=indices, shape=(1, 8, 8))
    expected = cd.sample(labels, noise, steps=1, guidance_scale=1.5)
    torch.testing.assert_close(evaluation.generate(seeds, indices, labels, 1), expected, rtol=0, atol=1e-6)
    # re-noising is keyed per image and step: the method and the exported folder agree at 2 steps too
    two = evaluation.generate(seeds, indices, labels, 2)
    method_two = cd.sample(labels, noise, steps=2, guidance_scale=1.5, seeds=seeds, indices=indices)
    torch.testing.assert_close(two, method_two, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="sampler must be"):
        GenerativeEvaluation(loaded, DigitsEvaluator.__new__(DigitsEvaluator), sampler="euler")
