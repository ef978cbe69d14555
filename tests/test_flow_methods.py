"""Every method on a flow-matching teacher, against the flow formulas and diffusers' flow schedulers: KD regresses
the velocity, progressive distillation's closed-form target makes one student Euler step land where two teacher
Euler steps did, consistency distillation's solver step is FlowMatchEuler's step and its export is a
FlowMatchLCMScheduler folder that samples exactly as the method; rectified-flow training."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import cpu_trainer, random_digits_loader, tiny_cond_unet
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchLCMScheduler

from distill.export import export_module
from distill.methods.consistency import ConsistencyDistillation
from distill.methods.progressive import ProgressiveDistillation
from distill.methods.training import DiffusionTraining
from distill.objectives import (
    ProgressiveOptions,
    consistency_function,
    progressive_distillation_loss,
    teacher_solver_step,
)
from distill.objectives.progressive import ProgressiveDraws
from distill.pipelines import ClassConditionalPipeline
from teachers import DiffusionTeacher
from teachers.network import call_denoiser
from teachers.parameterization import ddim_step
from teachers.sampling import per_sample_noise


@pytest.fixture
def flow_dir(tmp_path):
    path = tmp_path / "flow_teacher"
    tiny_cond_unet(seed=0).save_pretrained(path / "unet")
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(path / "scheduler")
    return path


@pytest.fixture
def teacher(flow_dir):
    return DiffusionTeacher.from_pretrained(flow_dir)


def test_kd_regresses_the_velocity_and_a_copy_of_the_teacher_has_zero_kd(teacher):
    from distill.objectives import KnowledgeOptions, NoisingDraws, knowledge_distillation_loss

    x0, noise = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    t = teacher.schedule.train_grid()[torch.tensor([0, 250, 600, 999])]
    labels = torch.tensor([0, 1, 2, 3])
    losses = knowledge_distillation_loss(
        teacher=teacher,
        student=copy.deepcopy(teacher.unet),
        x0=x0,
        cond=labels,
        draws=NoisingDraws(t=t, noise=noise),
        options=KnowledgeOptions(),
    )
    assert float(losses["output_kd"]) == 0.0
    s = (t / 1000).view(-1, 1, 1, 1)
    with torch.no_grad():
        out = call_denoiser(teacher.unet, (1 - s) * x0 + s * noise, t, labels)
    torch.testing.assert_close(losses["task"], torch.nn.functional.mse_loss(out, noise - x0))


def test_the_consistency_solver_step_is_flow_match_eulers_step(teacher):
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(teacher.weights_dir.parent / "scheduler")
    scheduler.set_timesteps(50)
    z = torch.randn(2, 1, 8, 8)
    labels = torch.tensor([4, 5])
    i = 10
    s, t = scheduler.timesteps[i], scheduler.timesteps[i + 1]
    ours = teacher_solver_step(teacher, z, s.expand(2), t.expand(2), labels, torch.zeros(2), guided=False)
    with torch.no_grad():
        v = call_denoiser(teacher.unet, z, s.expand(2), labels)
    scheduler._step_index = i
    theirs = scheduler.step(v, s, z).prev_sample
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    grid = teacher.schedule.skipping_grid(50)
    assert torch.equal(grid, scheduler.timesteps.flip(0))  # the solver grid is the teacher's 50-step grid


def test_the_consistency_function_is_x0_and_the_identity_at_clean_data(teacher):
    cd = ConsistencyDistillation(teacher, tiny_cond_unet(seed=3), samples_per_class=0)
    z = torch.randn(2, 1, 8, 8)
    labels = torch.tensor([1, 2])
    zero = torch.zeros(2)
    torch.testing.assert_close(
        consistency_function(cd.student, teacher.schedule, z, zero, labels, None, cd.options), z
    )
    t = torch.tensor([500.0, 900.0])
    with torch.no_grad():
        v = call_denoiser(cd.student, z, t, labels)
        f = consistency_function(cd.student, teacher.schedule, z, t, labels, None, cd.options)
    torch.testing.assert_close(f, z - (t / 1000).view(-1, 1, 1, 1) * v)  # FlowMatchLCM's x0
    assert cd.sampling_schedule().scheduler_class == "FlowMatchLCMScheduler"


def test_progressive_target_makes_one_student_euler_step_land_on_two_teacher_steps(teacher):
    grid = teacher.schedule.progressive_grid(4, final_steps=2)
    x0, noise = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    labels = torch.tensor([3, 7])
    draws = ProgressiveDraws(start=torch.tensor([0, 2]), w=torch.zeros(2), noise=noise)
    captured = {}

    def student(sample, timestep, **kwargs):  # records what the student is asked and answers the target
        captured["z"], captured["t"] = sample, timestep
        return torch.zeros_like(sample)

    student_net = tiny_cond_unet(seed=5)
    loss = progressive_distillation_loss(
        teacher=teacher,
        student=student_net,
        x0=x0,
        cond=labels,
        draws=draws,
        grid=grid,
        options=ProgressiveOptions(),
    )["loss"]
    assert torch.isfinite(loss)
    # two teacher Euler steps by hand from each start, on the grid's sigmas
    sig = torch.cat([grid / 1000, torch.zeros(1)])
    for row, start in enumerate([0, 2]):
        s0, s1, s2 = sig[start], sig[start + 1], sig[start + 2]
        z = (1 - s0) * x0[row : row + 1] + s0 * noise[row : row + 1]
        with torch.no_grad():
            z1 = z + (s1 - s0) * call_denoiser(teacher.unet, z, (s0 * 1000).view(1), labels[row : row + 1])
            z2 = z1 + (s2 - s1) * call_denoiser(teacher.unet, z1, (s1 * 1000).view(1), labels[row : row + 1])
        from teachers.parameterization import progressive_x_target

        goal = progressive_x_target(
            z=z,
            z_end=z2,
            alpha=1 - s0.view(1),
            sigma=s0.view(1),
            alpha_end=1 - s2.view(1),
            sigma_end=s2.view(1),
        )
        eps = (z - (1 - s0) * goal) / s0
        one_step = ddim_step(x0=goal, eps=eps, alpha_next=1 - s2.view(1), sigma_next=s2.view(1))
        torch.testing.assert_close(one_step, z2, atol=1e-5, rtol=1e-5)


def _fit(module, tmp_path, steps=2):
    trainer = cpu_trainer(steps)
    trainer.fit(module, train_dataloaders=random_digits_loader(32))
    path = tmp_path / f"{type(module).__name__}.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_progressive_rounds_run_and_export_the_teachers_euler_scheduler(flow_dir, tmp_path):
    def make():
        return ProgressiveDistillation(
            DiffusionTeacher.from_pretrained(flow_dir),
            tiny_cond_unet(seed=3),
            teacher_steps=4,
            final_steps=1,
            round_steps=1,
            samples_per_class=0,
        )

    ckpt = _fit(make(), tmp_path, steps=3)
    out = export_module(make(), ckpt_path=ckpt, output=tmp_path / "pd")
    config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "FlowMatchEulerDiscreteScheduler" and config["shift"] == 3.0
    FlowMatchEulerDiscreteScheduler.from_pretrained(out / "scheduler")  # stock diffusers loads it


def test_consistency_export_is_a_flow_match_lcm_folder_sampled_as_the_method(flow_dir, tmp_path):
    def make():
        return ConsistencyDistillation(
            DiffusionTeacher.from_pretrained(flow_dir), tiny_cond_unet(seed=3), samples_per_class=0
        )

    ckpt = _fit(make(), tmp_path)
    fresh = make()
    out = export_module(fresh, ckpt_path=ckpt, output=tmp_path / "lcm")
    index = json.loads((out / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "FlowMatchLCMScheduler"]
    scheduler = FlowMatchLCMScheduler.from_pretrained(out / "scheduler")
    assert scheduler.config.shift == 3.0
    pipe = ClassConditionalPipeline.from_pretrained(out)
    assert pipe.sampler == "consistency"
    labels = torch.tensor([1, 2])
    four = pipe(class_labels=labels, num_inference_steps=4, seed=3).images
    noise = per_sample_noise(seeds=torch.full((2,), 3), indices=torch.arange(2), shape=(1, 8, 8))
    expected = fresh.sample(labels, noise, steps=4, seeds=torch.full((2,), 3), indices=torch.arange(2))
    assert torch.equal(four, expected.add(1).div(2).clamp(0, 1))
    card = (out / "README.md").read_text()
    assert "FlowMatchLCMScheduler" in card


def test_rectified_flow_training_learns_and_refuses_min_snr(tmp_path):
    def make(**kwargs):
        kwargs.setdefault("time_density", "logit_normal")
        return DiffusionTraining(
            tiny_cond_unet(seed=1), FlowMatchEulerDiscreteScheduler(), samples_per_class=0, **kwargs
        )

    module = make()
    images, labels = next(iter(random_digits_loader(8)))
    gen = torch.Generator().manual_seed(0)
    loss = module.diffusion_loss(images, labels, generator=gen)
    assert torch.isfinite(loss) and loss > 0
    _fit(module, tmp_path, steps=2)
    with pytest.raises(ValueError, match="min_snr_gamma"):
        make(min_snr_gamma=5.0)
    with pytest.raises(ValueError, match="time_density"):
        make(time_density="cosine")
    module.save_pretrained(tmp_path / "rf")
    teacher = DiffusionTeacher.from_pretrained(tmp_path / "rf")
    assert (
        teacher.schedule.family == "flow"
        and teacher.schedule.scheduler_class == "FlowMatchEulerDiscreteScheduler"
    )
