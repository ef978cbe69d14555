"""Progressive distillation: the x-target, rounds, promotion, optimizer restart, guided teacher, checkpoints."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import random_digits_loader, tiny_cond_unet

from distill.methods.progressive import ProgressiveDistillation, round_schedule
from distill.objectives import w_embedding
from distill.objectives.progressive import round_teacher_prediction
from teachers import DiffusionTeacher
from teachers.parameterization import ddim_step, progressive_x_target, truncated_snr_weight


def _loader(n=32):
    return random_digits_loader(n)


@pytest.fixture
def teacher(tiny_teacher_dir):
    return DiffusionTeacher.from_pretrained(tiny_teacher_dir)


def test_round_schedule_halves_and_refuses_what_does_not():
    assert round_schedule(64, 1) == [64, 32, 16, 8, 4, 2]
    assert round_schedule(8, 2) == [8, 4]
    with pytest.raises(ValueError, match="does not halve down"):
        round_schedule(48, 1)
    with pytest.raises(ValueError, match="need teacher_steps > final_steps"):
        round_schedule(4, 4)


def test_x_target_makes_one_student_step_land_where_two_teacher_steps_did():
    gen = torch.Generator().manual_seed(0)
    z, z_end = torch.randn(3, 1, 4, 4, generator=gen), torch.randn(3, 1, 4, 4, generator=gen)
    alpha, sigma = torch.tensor([0.3, 0.6, 0.9]), torch.tensor([0.3, 0.6, 0.9]).pow(2).neg().add(1).sqrt()
    alpha_end, sigma_end = (
        torch.tensor([0.5, 0.8, 1.0]),
        torch.tensor([0.5, 0.8, 1.0]).pow(2).neg().add(1).sqrt(),
    )
    x = progressive_x_target(
        z=z, z_end=z_end, alpha=alpha, sigma=sigma, alpha_end=alpha_end, sigma_end=sigma_end
    )
    eps = (z - alpha[:, None, None, None] * x) / sigma[:, None, None, None]  # the student's implied eps
    landed = ddim_step(x0=x, eps=eps, alpha_next=alpha_end, sigma_next=sigma_end)
    torch.testing.assert_close(landed, z_end, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x[2], z_end[2])  # last step (clean data): the teacher's x-prediction itself
    w = truncated_snr_weight(alpha=alpha, sigma=sigma)
    assert w[0] == 1.0 and w[2] == pytest.approx(0.81 / 0.19, rel=1e-5)


def test_training_loss_trains_only_the_student(teacher):
    pd = ProgressiveDistillation(
        teacher, tiny_cond_unet(seed=2), teacher_steps=8, final_steps=1, samples_per_class=0
    )
    images, labels = next(iter(_loader()))
    losses = pd.training_losses((images, labels))
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0
    losses["loss"].backward()
    assert all(p.grad is not None for p in pd.student.parameters() if p.requires_grad)
    assert all(p.grad is None for p in pd.teacher.parameters())
    assert all(p.grad is None for p in pd.round_teacher.parameters())
    # a student identical to its teacher already matches the two-step target at the last (clean) step better
    # than a random student does: the loss sees the teacher
    same = ProgressiveDistillation(
        teacher, tiny_cond_unet(seed=0), teacher_steps=2, final_steps=1, samples_per_class=0
    )
    other = ProgressiveDistillation(
        teacher,
        tiny_cond_unet(seed=5),
        teacher_steps=2,
        final_steps=1,
        samples_per_class=0,
        init_from_teacher=False,
    )
    torch.manual_seed(1)
    a = same.training_losses((images, labels))["loss"]
    torch.manual_seed(1)
    b = other.training_losses((images, labels))["loss"]
    assert a < b


def test_rounds_promote_the_student_and_restart_the_optimizer(teacher, tmp_path):
    pd = ProgressiveDistillation(
        teacher,
        tiny_cond_unet(seed=2),
        teacher_steps=8,
        final_steps=1,
        round_steps=2,
        promote="student",
        samples_per_class=0,
    )
    seen = []

    class Watch(L.Callback):  # batch end: after the optimizer step and the module's round update
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            state = list(trainer.optimizers[0].state.values())
            seen.append((trainer.global_step, int(module.round_index), int(state[0]["step"]) if state else 0))

    trainer = L.Trainer(
        max_steps=5,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        callbacks=[Watch()],
    )
    trainer.fit(pd, train_dataloaders=_loader())
    # steps 2 and 4 end their rounds: the round advances and a fresh optimizer (no state yet) takes over
    assert seen == [(1, 0, 1), (2, 1, 0), (3, 1, 1), (4, 2, 0), (5, 2, 1)]
    assert pd.current_teacher_steps == 2 and pd.current_student_steps == 1
    path = tmp_path / "pd.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert not [k for k in state["state_dict"] if k.startswith("teacher.")]
    fresh = ProgressiveDistillation(
        DiffusionTeacher.from_pretrained(teacher.source),
        tiny_cond_unet(seed=9),
        teacher_steps=8,
        final_steps=1,
        round_steps=2,
        samples_per_class=0,
    )
    fresh.on_load_checkpoint(state)
    fresh.load_state_dict(state["state_dict"])
    assert int(fresh.round_index) == 2 and int(fresh.round_start) == 4
    for a, b in zip(fresh.round_teacher.parameters(), pd.round_teacher.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    out = fresh.sample(torch.tensor([1, 2]), torch.randn(2, 1, 8, 8))  # one DDIM step now
    assert out.shape == (2, 1, 8, 8) and out.abs().max() <= 1.0 + 1e-6


def test_guided_round_one_uses_cfg_and_later_rounds_the_w_input(teacher):
    pd = ProgressiveDistillation(
        teacher,
        tiny_cond_unet(seed=2, time_cond_proj_dim=8),
        teacher_steps=4,
        final_steps=1,
        guidance_min=2.0,
        guidance_max=2.0,
        samples_per_class=0,
    )
    z, t, labels, w = torch.randn(2, 1, 8, 8), torch.tensor([999, 499]), torch.tensor([3, 4]), torch.ones(2)
    emb = w_embedding(w, pd.embed_dim)
    guided = round_teacher_prediction(teacher, None, z, t, labels, w, emb, pd.options)
    with torch.no_grad():
        expected = teacher.predict(z, t, labels, guidance_scale=2.0)
    torch.testing.assert_close(guided.x0, expected.x0)
    pd.round_index += 1
    via_input = round_teacher_prediction(teacher, pd.round_teacher.module, z, t, labels, w, emb, pd.options)
    assert not torch.allclose(via_input.x0, guided.x0)  # now the promoted student, taking w as an input


def test_bad_progressive_settings(teacher):
    with pytest.raises(ValueError, match="need a student with a timestep_cond input"):
        ProgressiveDistillation(teacher, tiny_cond_unet(), guidance_max=2.0)
    with pytest.raises(ValueError, match="promote must be"):
        ProgressiveDistillation(teacher, tiny_cond_unet(), promote="best")
    with pytest.raises(ValueError, match="exceeds the teacher's 1000 timesteps"):
        ProgressiveDistillation(teacher, tiny_cond_unet(), teacher_steps=2048)
    with pytest.raises(ValueError, match="round_steps must be >= 1"):
        ProgressiveDistillation(teacher, tiny_cond_unet(), round_steps=0)


def test_export_writes_a_trailing_ddim_scheduler_that_samples_like_the_method(teacher, tmp_path):
    from diffusers import DDIMScheduler

    from distill.methods.evaluation import GenerativeEvaluation
    from distill.metrics import DigitsEvaluator
    from teachers.sampling import per_sample_noise

    pd = ProgressiveDistillation(
        teacher, tiny_cond_unet(seed=2), teacher_steps=4, final_steps=1, samples_per_class=0
    )
    pd.eval().save_pretrained(tmp_path)
    scheduler = DDIMScheduler.from_pretrained(tmp_path / "scheduler")
    scheduler.set_timesteps(2)
    assert scheduler.config.timestep_spacing == "trailing" and scheduler.timesteps.tolist() == [999, 499]
    loaded = DiffusionTeacher.from_pretrained(tmp_path)
    evaluation = GenerativeEvaluation(loaded, DigitsEvaluator.__new__(DigitsEvaluator), guidance_scale=1.0)
    assert evaluation.resolved_sampler == "ddim"
    seeds, indices, labels = torch.zeros(2, dtype=torch.long), torch.arange(2), torch.tensor([3, 6])
    noise = per_sample_noise(seeds=seeds, indices=indices, shape=(1, 8, 8))
    torch.testing.assert_close(
        evaluation.generate(seeds, indices, labels, 2), pd.sample(labels, noise, steps=2), rtol=0, atol=1e-6
    )
