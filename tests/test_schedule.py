"""Schedule and parameterisation math against diffusers' DDPMScheduler / DDIMScheduler and the papers."""

from __future__ import annotations

import itertools

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from teachers.parameterization import (
    Prediction,
    cfg_combine,
    ddim_step,
    eps_from_v,
    eps_from_x0,
    target_for,
    to_prediction,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)
from teachers.sampling import ddim_sample
from teachers.schedule import (
    NoiseSchedule,
    alpha_sigma,
    previous_timesteps,
    q_sample,
    snr,
    timestep_grid,
)

BETAS = ["linear", "scaled_linear", "squaredcos_cap_v2"]
PREDICTIONS = ["epsilon", "v_prediction", "sample"]
TOL = 1e-5


def _config(beta_schedule: str, prediction_type: str, **extra):
    return {
        "num_train_timesteps": 1000,
        "beta_schedule": beta_schedule,
        "prediction_type": prediction_type,
        "clip_sample": False,
        **extra,
    }


@pytest.mark.parametrize("beta_schedule", BETAS)
def test_alphas_cumprod_match_ddpm(beta_schedule):
    ddpm = DDPMScheduler(**_config(beta_schedule, "epsilon"))
    schedule = NoiseSchedule.from_scheduler(ddpm)
    torch.testing.assert_close(schedule.alphas_cumprod.float(), ddpm.alphas_cumprod, atol=0, rtol=0)
    t = torch.tensor([0, 1, 250, 500, 999])
    alpha, sigma = schedule.alpha_sigma(t, dtype=torch.float64)
    torch.testing.assert_close(alpha.square() + sigma.square(), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(alpha.float(), ddpm.alphas_cumprod[t].sqrt(), atol=TOL, rtol=0)


@pytest.mark.parametrize("beta_schedule", BETAS)
def test_q_sample_and_velocity_match_ddpm(beta_schedule):
    ddpm = DDPMScheduler(**_config(beta_schedule, "v_prediction"))
    schedule = NoiseSchedule.from_scheduler(ddpm)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, 8, 8, generator=gen)
    eps = torch.randn(6, 3, 8, 8, generator=gen)
    t = torch.tensor([0, 10, 300, 600, 900, 999])
    alpha, sigma = schedule.alpha_sigma(t)
    z = q_sample(x0=x0, eps=eps, alpha=alpha, sigma=sigma)
    torch.testing.assert_close(z, ddpm.add_noise(x0, eps, t), atol=TOL, rtol=0)
    v = v_from_x0_eps(x0=x0, eps=eps, alpha=alpha, sigma=sigma)
    torch.testing.assert_close(v, ddpm.get_velocity(x0, eps, t), atol=TOL, rtol=0)
    assert target_for(prediction_type="v_prediction", x0=x0, eps=eps, alpha=alpha, sigma=sigma) is not None


def test_conversions_are_mutually_consistent():
    gen = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 4, 4, 4, generator=gen).unbind(0)
    x0, eps = x0.unsqueeze(0).repeat(3, 1, 1, 1), eps.unsqueeze(0).repeat(3, 1, 1, 1)
    abar = torch.tensor([0.9, 0.5, 0.05])
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    z = q_sample(x0=x0, eps=eps, alpha=alpha, sigma=sigma)
    v = v_from_x0_eps(x0=x0, eps=eps, alpha=alpha, sigma=sigma)
    torch.testing.assert_close(x0_from_eps(z=z, eps=eps, alpha=alpha, sigma=sigma), x0, atol=TOL, rtol=0)
    torch.testing.assert_close(eps_from_x0(z=z, x0=x0, alpha=alpha, sigma=sigma), eps, atol=TOL, rtol=0)
    torch.testing.assert_close(x0_from_v(z=z, v=v, alpha=alpha, sigma=sigma), x0, atol=TOL, rtol=0)
    torch.testing.assert_close(eps_from_v(z=z, v=v, alpha=alpha, sigma=sigma), eps, atol=TOL, rtol=0)
    # Salimans & Ho: v = alpha eps - sigma x0, and z, v are a rotation of (x0, eps) by phi = atan(sigma/alpha)
    torch.testing.assert_close(z.square() + v.square(), x0.square() + eps.square(), atol=1e-5, rtol=0)
    for kind, out in (("epsilon", eps), ("v_prediction", v), ("sample", x0)):
        pred = to_prediction(output=out, prediction_type=kind, z=z, alpha=alpha, sigma=sigma)
        for got, want in zip(pred, Prediction(x0=x0, eps=eps, v=v), strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="prediction_type"):
        to_prediction(output=eps, prediction_type="flow", z=z, alpha=alpha, sigma=sigma)


def test_snr_of_cosine_schedule_is_monotone():
    schedule = NoiseSchedule.from_scheduler_config(_config("squaredcos_cap_v2", "v_prediction"))
    alpha, sigma = schedule.alpha_sigma(torch.arange(1000), dtype=torch.float64)
    values = snr(alpha=alpha, sigma=sigma)
    assert torch.all(values[1:] < values[:-1])


@pytest.mark.parametrize(
    ("spacing", "steps"), itertools.product(["leading", "trailing", "linspace"], [1, 2, 4, 8, 50, 7])
)
def test_grids_match_ddim(spacing, steps):
    ddim = DDIMScheduler(
        **_config(
            "linear", "epsilon", timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0
        )
    )
    ddim.set_timesteps(steps)
    ours = timestep_grid(
        num_inference_steps=steps,
        num_train_timesteps=1000,
        spacing=spacing,
        steps_offset=ddim.config.steps_offset,
    )
    assert ours.tolist() == ddim.timesteps.tolist()


def test_trailing_one_step_starts_at_pure_noise_and_leading_does_not():
    assert timestep_grid(num_inference_steps=1, num_train_timesteps=1000, spacing="trailing").tolist() == [
        999
    ]
    assert timestep_grid(num_inference_steps=1, num_train_timesteps=1000, spacing="leading").tolist() == [0]
    assert previous_timesteps(timesteps=torch.tensor([999, 499])).tolist() == [499, -1]
    with pytest.raises(ValueError, match="num_inference_steps"):
        timestep_grid(num_inference_steps=0, num_train_timesteps=1000, spacing="trailing")
    with pytest.raises(ValueError, match="spacing"):
        timestep_grid(num_inference_steps=4, num_train_timesteps=1000, spacing="karras")  # type: ignore[arg-type]


def test_negative_timestep_is_clean_data():
    acp = NoiseSchedule.from_scheduler_config(_config("linear", "epsilon")).alphas_cumprod
    alpha, sigma = alpha_sigma(alphas_cumprod=acp, timesteps=torch.tensor([-1, 0]))
    assert alpha[0] == 1 and sigma[0] == 0 and alpha[1] < 1


@pytest.mark.parametrize(
    ("beta_schedule", "prediction_type", "spacing"),
    itertools.product(BETAS, PREDICTIONS, ["leading", "trailing"]),
)
def test_ddim_step_matches_diffusers(beta_schedule, prediction_type, spacing):
    """One deterministic DDIM step per grid point equals DDIMScheduler.step (eta=0, set_alpha_to_one)."""
    cfg = _config(beta_schedule, prediction_type, timestep_spacing=spacing, set_alpha_to_one=True)
    ddim = DDIMScheduler(**cfg)
    ddim.set_timesteps(10)
    schedule = NoiseSchedule.from_scheduler(ddim)
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(2, 3, 8, 8, generator=gen)
    grid = schedule.grid(10)
    assert grid.tolist() == ddim.timesteps.tolist()
    for t, t_next in zip(grid.tolist(), previous_timesteps(timesteps=grid).tolist(), strict=True):
        out = torch.randn(2, 3, 8, 8, generator=gen)
        ref = ddim.step(out, t, z, eta=0.0)
        tv = torch.full((2,), t)
        alpha, sigma = schedule.alpha_sigma(tv)
        pred = to_prediction(output=out, prediction_type=prediction_type, z=z, alpha=alpha, sigma=sigma)
        alpha_n, sigma_n = schedule.alpha_sigma(torch.full((2,), t_next))
        mine = ddim_step(x0=pred.x0, eps=pred.eps, alpha_next=alpha_n, sigma_next=sigma_n)
        torch.testing.assert_close(pred.x0, ref.pred_original_sample, atol=TOL, rtol=TOL)
        torch.testing.assert_close(mine, ref.prev_sample, atol=TOL, rtol=TOL)
        z = ref.prev_sample


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_ddim_sampler_matches_diffusers_loop(prediction_type):
    """The whole sampler, with x0 clipping, against diffusers' DDIM loop on a fixed toy denoiser."""
    cfg = _config(
        "squaredcos_cap_v2",
        prediction_type,
        timestep_spacing="trailing",
        clip_sample=True,
        clip_sample_range=1.0,
    )
    ddim = DDIMScheduler(**cfg)
    schedule = NoiseSchedule.from_scheduler(ddim)
    weight = torch.linspace(-1.5, 1.5, 3 * 8 * 8).reshape(3, 8, 8)

    def net(z, t):  # a smooth, time-dependent toy network output
        return torch.tanh(z * weight) * (1 + t.float().reshape(-1, 1, 1, 1) / 1000)

    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    ddim.set_timesteps(8)
    z = noise.clone()
    for t in ddim.timesteps:
        # our sampler re-derives eps from the clipped x0 (as GLIDE): diffusers' use_clipped_model_output=True
        z = ddim.step(net(z, t.expand(2)), t, z, eta=0.0, use_clipped_model_output=True).prev_sample

    def denoiser(x, t):
        alpha, sigma = schedule.alpha_sigma(t)
        return to_prediction(output=net(x, t), prediction_type=prediction_type, z=x, alpha=alpha, sigma=sigma)

    ours = ddim_sample(
        denoiser=denoiser,
        noise=noise,
        timesteps=schedule.grid(8),
        alphas_cumprod=schedule.alphas_cumprod,
        clip_x0=1.0,
    )
    torch.testing.assert_close(ours, z, atol=TOL, rtol=TOL)


def test_cfg_combine_is_parameterisation_independent():
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(3, 1, 4, 4, generator=gen)
    out_c, out_u = torch.randn(2, 3, 1, 4, 4, generator=gen)
    abar = torch.tensor([0.7, 0.3, 0.1])
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    w = torch.tensor([1.0, 2.0, 7.5])
    guided_v = cfg_combine(cond=out_c, uncond=out_u, guidance_scale=w)
    x0_from_guided = x0_from_v(z=z, v=guided_v, alpha=alpha, sigma=sigma)
    guided_x0 = cfg_combine(
        cond=x0_from_v(z=z, v=out_c, alpha=alpha, sigma=sigma),
        uncond=x0_from_v(z=z, v=out_u, alpha=alpha, sigma=sigma),
        guidance_scale=w,
    )
    torch.testing.assert_close(x0_from_guided, guided_x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(cfg_combine(cond=out_c, uncond=out_u, guidance_scale=1.0), out_c)


def test_schedule_rejects_unknown_prediction_type():
    with pytest.raises(ValueError, match="prediction_type"):
        NoiseSchedule.from_scheduler_config(_config("linear", "flow_prediction"))


@pytest.mark.parametrize("set_alpha_to_one", [True, False])
@pytest.mark.parametrize("steps", [1, 4, 25])
def test_sampling_contract_honours_set_alpha_to_one_like_diffusers(set_alpha_to_one, steps):
    """SD-1.x configs set ``set_alpha_to_one: false``: the last DDIM step lands at ``alphas_cumprod[0]``, not at
    clean data. The library's sampling loop (teachers, methods and exported folders all sample through it) reads
    the flag from the config and agrees with diffusers' DDIM loop either way."""
    from teachers.sampling import sample

    cfg = _config(
        "scaled_linear",
        "v_prediction",
        beta_start=0.00085,
        beta_end=0.012,
        timestep_spacing="trailing",
        set_alpha_to_one=set_alpha_to_one,
    )
    ddim = DDIMScheduler(**cfg)
    schedule = NoiseSchedule.from_scheduler(ddim)
    expected_final = 1.0 if set_alpha_to_one else float(ddim.alphas_cumprod[0])
    assert schedule.final_alphas_cumprod == pytest.approx(expected_final)
    weight = torch.linspace(-1.5, 1.5, 4 * 8 * 8).reshape(4, 8, 8)

    def net(z, t):
        return torch.tanh(z * weight) * (1 + t.float().reshape(-1, 1, 1, 1) / 1000)

    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    ddim.set_timesteps(steps)
    z = noise.clone()
    for t in ddim.timesteps:
        z = ddim.step(net(z, t.expand(2)), t, z, eta=0.0).prev_sample

    def denoiser(x, t):
        alpha, sigma = schedule.alpha_sigma(t)
        return to_prediction(output=net(x, t), prediction_type="v_prediction", z=x, alpha=alpha, sigma=sigma)

    ours = sample(
        denoiser=denoiser, schedule=schedule, noise=noise, steps=steps, sampler="ddim", clip_x0=None
    )
    torch.testing.assert_close(ours, z, atol=TOL, rtol=TOL)
