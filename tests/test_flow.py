"""The flow-matching family against diffusers: grids, the Euler and consistency samplers, conversions, training
times, and the errors a bad flow config or a mismatched student gets."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from conftest import tiny_cond_unet, tiny_unet2d
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchLCMScheduler

from teachers.flow import FlowSchedule, dynamic_shift_mu
from teachers.network import call_denoiser, denoise
from teachers.parameterization import target_for, to_prediction
from teachers.sampling import consistency_sample, sample
from teachers.schedule import NoiseSchedule, schedule_from_config, schedule_from_scheduler
from teachers.teacher import DiffusionTeacher

CONFIGS = [
    pytest.param({}, id="plain"),
    pytest.param({"shift": 3.0}, id="shift3"),
    pytest.param({"use_dynamic_shifting": True}, id="dynamic"),
    pytest.param(
        {"use_dynamic_shifting": True, "time_shift_type": "linear", "base_shift": 0.3, "max_shift": 2.0},
        id="dynamic-linear",
    ),
    pytest.param({"shift": 2.0, "shift_terminal": 0.02}, id="terminal"),
]
STEPS = [1, 2, 4, 13, 50]


def _schedule(scheduler, seq_len: int = 64) -> FlowSchedule:
    schedule = schedule_from_scheduler(scheduler)
    assert isinstance(schedule, FlowSchedule)
    return schedule.with_image_seq_len(seq_len)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("steps", STEPS)
def test_the_grid_is_exactly_flow_match_eulers(config, steps):
    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    schedule = _schedule(scheduler)
    if config.get("shift_terminal") and steps == 1:  # diffusers divides by zero here
        with pytest.raises(ValueError, match="2 or more steps"):
            schedule.grid(steps)
        return
    scheduler.set_timesteps(steps, mu=schedule.mu)
    assert torch.equal(schedule.grid(steps), scheduler.timesteps)
    assert torch.equal(torch.cat([schedule.sigmas(steps), torch.zeros(1)]), scheduler.sigmas)


def test_dynamic_shift_mu_is_the_pipelines_calculate_shift():
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    for n in (64, 256, 1024, 4096):
        assert dynamic_shift_mu(image_seq_len=n) == pytest.approx(calculate_shift(n), abs=1e-12)
        assert dynamic_shift_mu(
            image_seq_len=n, base_seq_len=64, max_seq_len=1024, base_shift=0.3, max_shift=2.0
        ) == pytest.approx(calculate_shift(n, 64, 1024, 0.3, 2.0), abs=1e-12)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("steps", STEPS)
def test_euler_sampling_matches_diffusers_scheduler_loop(config, steps):
    """The library's sampler on one network against diffusers' FlowMatchEuler loop, with the network time passed
    exactly as the scheduler hands it to the pipeline (float ``sigma * T``)."""
    if config.get("shift_terminal") and steps == 1:
        return  # refused (test above)
    net = tiny_unet2d(seed=1, num_class_embeds=None).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    schedule = _schedule(scheduler)
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(steps))
    scheduler.set_timesteps(steps, mu=schedule.mu)
    z = noise.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            z = scheduler.step(net(z, t.expand(3)).sample, t, z).prev_sample
    ours = sample(
        denoiser=functools.partial(denoise, net, schedule, cond=None),
        schedule=schedule,
        noise=noise,
        steps=steps,
        clip_x0=None,
    )
    assert torch.allclose(ours, z, atol=1e-5, rtol=0), (ours - z).abs().max()


@pytest.mark.parametrize("config", CONFIGS[:3])
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_consistency_sampling_matches_flow_match_lcm(config, steps):
    net = tiny_unet2d(seed=2, num_class_embeds=None).eval()
    scheduler = FlowMatchLCMScheduler(**config)
    schedule = _schedule(scheduler)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    scheduler.set_timesteps(steps, mu=schedule.mu)
    gen = torch.Generator().manual_seed(3)
    z = noise.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            z = scheduler.step(net(z, t.expand(2)).sample, t, z, generator=gen).prev_sample
    draws = torch.Generator().manual_seed(3)
    ours = consistency_sample(
        denoiser=functools.partial(denoise, net, schedule, cond=None),
        noise=noise,
        timesteps=schedule.consistency_grid(steps),
        schedule=schedule,
        step_noise=lambda i: torch.randn(noise.shape, generator=draws),
    )
    assert (
        schedule.with_config(_class_name="FlowMatchLCMScheduler").scheduler_class == "FlowMatchLCMScheduler"
    )
    assert torch.allclose(ours, z, atol=1e-5, rtol=0), (ours - z).abs().max()


def test_flow_conversions_round_trip_and_match_the_papers():
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 1, 4, 4, generator=gen), torch.randn(4, 1, 4, 4, generator=gen)
    s = torch.tensor([0.05, 0.3, 0.7, 1.0])
    schedule = FlowSchedule.from_scheduler_config({"_class_name": "FlowMatchEulerDiscreteScheduler"})
    alpha, sigma = schedule.alpha_sigma(s * 1000)
    assert torch.allclose(alpha + sigma, torch.ones(4))
    z = (1 - s).view(-1, 1, 1, 1) * x0 + s.view(-1, 1, 1, 1) * eps
    velocity = target_for(prediction_type="flow_prediction", x0=x0, eps=eps, alpha=alpha, sigma=sigma)
    assert torch.equal(velocity, eps - x0)
    pred = to_prediction(output=velocity, prediction_type="flow_prediction", z=z, alpha=alpha, sigma=sigma)
    assert torch.allclose(pred.x0, x0, atol=1e-5) and torch.allclose(pred.eps, eps, atol=1e-5)
    assert torch.allclose(pred.flow, velocity, atol=1e-5)
    assert torch.allclose(pred.v, alpha.view(-1, 1, 1, 1) * eps - sigma.view(-1, 1, 1, 1) * x0, atol=1e-5)
    # the same velocity from a v-prediction network on the discrete family: conversions are family-free
    vp = NoiseSchedule.from_scheduler_config({"prediction_type": "v_prediction"})
    a, b = vp.alpha_sigma(torch.tensor([10, 300, 700, 999]))
    zz = a.view(-1, 1, 1, 1) * x0 + b.view(-1, 1, 1, 1) * eps
    v = target_for(prediction_type="v_prediction", x0=x0, eps=eps, alpha=a, sigma=b)
    assert torch.allclose(
        to_prediction(output=v, prediction_type="v_prediction", z=zz, alpha=a, sigma=b).flow,
        eps - x0,
        atol=1e-4,
    )
    back = to_prediction(output=eps - x0, prediction_type="flow_prediction", z=zz, alpha=a, sigma=b)
    assert torch.allclose(back.x0, x0, atol=1e-4)


def test_training_times_follow_sd3s_logit_normal_recipe():
    from diffusers.training_utils import compute_density_for_timestep_sampling

    from distill.rng import GeneratorRandom

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    schedule = schedule_from_scheduler(scheduler)
    n = 4096
    ours = schedule.train_times(GeneratorRandom(torch.Generator().manual_seed(0)), n, density="logit_normal")
    torch.manual_seed(0)
    u = compute_density_for_timestep_sampling(
        weighting_scheme="logit_normal", batch_size=n, logit_mean=0.0, logit_std=1.0
    )
    theirs = scheduler.timesteps[(u * scheduler.config.num_train_timesteps).long()]
    assert torch.equal(ours, theirs)
    uniform = schedule.train_times(GeneratorRandom(torch.Generator().manual_seed(0)), n)
    assert set(uniform.tolist()) <= set(scheduler.timesteps.tolist())


def test_progressive_grids_are_nested_and_end_on_the_samplers_grid():
    schedule = FlowSchedule.from_scheduler_config(
        {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}
    )
    final = schedule.progressive_grid(2, final_steps=2)
    assert torch.equal(final, schedule.grid(2))
    g8 = schedule.progressive_grid(8, final_steps=2)
    g4 = schedule.progressive_grid(4, final_steps=2)
    assert len(g8) == 8 and torch.equal(g8[::2], g4) and torch.equal(g4[::2], final)
    assert bool((g8[:-1] > g8[1:]).all())
    with pytest.raises(ValueError, match="power of two"):
        schedule.progressive_grid(6, final_steps=4)


def test_sana_style_solver_configs_read_as_flow_with_their_shift():
    config = {
        "_class_name": "DPMSolverMultistepScheduler",
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
        "flow_shift": 3.0,
        "num_train_timesteps": 1000,
    }
    schedule = schedule_from_config(config)
    assert isinstance(schedule, FlowSchedule) and schedule.shift == 3.0
    reference = FlowMatchEulerDiscreteScheduler(shift=3.0)
    reference.set_timesteps(8)
    assert torch.equal(schedule.grid(8), reference.timesteps)


def test_a_flow_config_never_builds_a_discrete_schedule():
    with pytest.raises(ValueError, match="flow-matching schedule"):
        NoiseSchedule.from_scheduler_config({"_class_name": "FlowMatchEulerDiscreteScheduler"})


@pytest.mark.parametrize(
    "config, match",
    [
        ({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_karras_sigmas": True}, "use_karras_sigmas"),
        (
            {"_class_name": "FlowMatchEulerDiscreteScheduler", "stochastic_sampling": True},
            "stochastic_sampling",
        ),
        ({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": -1.0}, "shift must be a positive"),
        ({"_class_name": "FlowMatchEulerDiscreteScheduler", "time_shift_type": "cubic"}, "time_shift_type"),
        (
            {"_class_name": "DDIMScheduler", "prediction_type": "flow_prediction"},
            "needs a flow-matching schedule",
        ),
        ({"_class_name": "MyOwnScheduler"}, "not one this library samples"),
    ],
)
def test_bad_flow_configs_are_refused_naming_the_file_and_key(config, match):
    with pytest.raises(ValueError, match=match) as err:
        schedule_from_config(config, source="teacher/scheduler/scheduler_config.json")
    assert "teacher/scheduler/scheduler_config.json" in str(err.value)


def _flow_teacher(path, **scheduler):
    tiny_cond_unet(seed=0).save_pretrained(path / "unet")
    FlowMatchEulerDiscreteScheduler(**scheduler).save_pretrained(path / "scheduler")
    return path


def test_a_flow_teacher_loads_samples_and_refuses_a_contradicting_shift(tmp_path):
    folder = _flow_teacher(tmp_path / "teacher", shift=3.0)
    teacher = DiffusionTeacher.from_pretrained(folder)
    assert teacher.schedule.family == "flow" and teacher.prediction_type == "flow_prediction"
    assert DiffusionTeacher.from_pretrained(folder, shift=3.0).schedule.shift == 3.0
    with pytest.raises(ValueError, match=r"shift=2.0 contradicts the teacher's scheduler config .*shift=3.0"):
        DiffusionTeacher.from_pretrained(folder, shift=2.0)
    with pytest.raises(ValueError, match="discrete"):
        DiffusionTeacher(tiny_cond_unet(), {"prediction_type": "v_prediction"}, shift=3.0)
    labels = torch.tensor([1, 2])
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = teacher.sample(labels, noise, steps=4, guidance_scale=2.0)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler")
    scheduler.set_timesteps(4)
    z = noise.clone()
    null = torch.full_like(labels, teacher.null_class)
    with torch.no_grad():
        for t in scheduler.timesteps:  # CFG as the SD3 pipeline batches it, no clipping
            both = call_denoiser(teacher.unet, torch.cat([z, z]), t.expand(4), torch.cat([labels, null]))
            cond, uncond = both.chunk(2)
            z = scheduler.step(uncond + 2.0 * (cond - uncond), t, z).prev_sample
    assert torch.allclose(out, z, atol=1e-5)


def test_a_dynamically_shifted_teacher_reads_its_token_count_from_the_network(tmp_path):
    folder = _flow_teacher(tmp_path / "teacher", use_dynamic_shifting=True)
    teacher = DiffusionTeacher.from_pretrained(folder)
    assert teacher.schedule.image_seq_len == 64  # 8 x 8 pixels, patch 1
    with pytest.raises(ValueError, match="use_dynamic_shifting"):
        DiffusionTeacher.from_pretrained(folder, shift=3.0)


def test_a_student_of_the_other_family_is_refused_before_training(tmp_path):
    from distill import KnowledgeDistillation
    from students.loading import load_student

    flow = DiffusionTeacher.from_pretrained(_flow_teacher(tmp_path / "flow"))
    vp_student = tmp_path / "vp_student"
    tiny_cond_unet(seed=3).save_pretrained(vp_student / "unet")
    (vp_student / "scheduler").mkdir()
    (vp_student / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "DDIMScheduler", "prediction_type": "v_prediction"})
    )
    with pytest.raises(ValueError, match="flow matching"):
        KnowledgeDistillation(flow, load_student(vp_student))
