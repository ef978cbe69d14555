"""Distribution matching on a problem with a known answer: a 2-D Gaussian-mixture teacher whose denoiser is exact
(closed form), a small MLP generator and an MLP fake score trained with the library's DMD objectives
(:mod:`distill.objectives.distribution_matching`). The generator's sample mean and covariance must approach the
mixture's: the moment error falls at least 10x from the start. The same loop with the teacher's and the fake
score's roles swapped in the gradient (the sign flipped) must not, so the test fails when the direction is wrong."""

from __future__ import annotations

import math

import torch
from torch import nn

from distill.objectives.distribution_matching import (
    DistributionMatchingOptions,
    critic_loss,
    dm_gradient,
    draw_distribution_matching,
    generate,
    generator_loss,
)
from distill.rng import GeneratorRandom
from teachers import DiffusionTeacher

SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "sample",
    "clip_sample": False,
}
MEANS = torch.tensor([[2.0, 0.5], [-1.0, 1.5], [-0.5, -1.5]])
WEIGHTS = torch.tensor([0.5, 0.3, 0.2])
STD = 0.4


def mixture_moments() -> tuple[torch.Tensor, torch.Tensor]:
    mean = (WEIGHTS[:, None] * MEANS).sum(0)
    centred = MEANS - mean
    cov = STD**2 * torch.eye(2) + (WEIGHTS[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0)
    return mean, cov


class MixtureDenoiser(nn.Module):
    """The exact posterior mean E[x0 | x_t] of the mixture under the VP schedule (predicts the sample)."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("abar", alphas_cumprod.float())
        self.anchor = nn.Parameter(torch.zeros(()))  # a parameter, so the teacher has a dtype

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        abar = self.abar[timestep.long()].view(-1, 1, 1)
        a, s2 = abar.sqrt(), 1 - abar
        x = sample[:, None, :]
        var = a**2 * STD**2 + s2  # marginal variance of each component at t (isotropic)
        log_r = (
            torch.log(WEIGHTS) - ((x - a * MEANS) ** 2).sum(-1) / (2 * var[..., 0]) - torch.log(var[..., 0])
        )
        r = log_r.softmax(dim=1)[..., None]
        posterior = MEANS + a * STD**2 / var * (x - a * MEANS)
        return (r * posterior).sum(1)


class TimeMLP(nn.Module):
    """An MLP denoiser/generator of 2-D points with a sinusoidal time embedding."""

    def __init__(self, hidden: int = 128, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Linear(2 + 16, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2)
        )

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(torch.arange(8) * (-math.log(1000.0) / 8))
        angle = timestep.float()[:, None] * freqs[None] / 1000.0 * 2 * math.pi * 10
        return self.net(torch.cat([sample, angle.sin(), angle.cos()], dim=1))


def moment_error(x: torch.Tensor) -> float:
    mean, cov = mixture_moments()
    return float((x.mean(0) - mean).norm() + (torch.cov(x.T) - cov).norm())


def train(*, updates: int, flip: bool = False, seed: int = 0) -> tuple[float, float]:
    from diffusers import DDPMScheduler

    abar = DDPMScheduler(**{k: v for k, v in SCHEDULER.items() if k != "_class_name"}).alphas_cumprod
    teacher = DiffusionTeacher(MixtureDenoiser(abar), SCHEDULER)
    schedule = teacher.schedule
    generator, fake = TimeMLP(seed=1), TimeMLP(seed=2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3)
    opt_f = torch.optim.Adam(fake.parameters(), lr=1e-3)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, T_max=updates)
    options = DistributionMatchingOptions(gan_generator_weight=0.0, gan_critic_weight=0.0)
    grid = schedule.consistency_grid(1)
    rng = GeneratorRandom(torch.Generator().manual_seed(seed))
    batch = torch.zeros(512, 2)

    def samples() -> torch.Tensor:  # 8192 samples: the moments' own sampling error stays near 0.03
        with torch.no_grad():
            held_out = GeneratorRandom(torch.Generator().manual_seed(99))
            draws = draw_distribution_matching(
                held_out, x0=torch.zeros(8192, 2), num_steps=1, schedule=schedule
            )
            return generate(generator, schedule, grid=grid, draws=draws, cond=None, options=options)

    start = moment_error(samples())
    for update in range(updates * 6):
        draws = draw_distribution_matching(rng, x0=batch, num_steps=1, schedule=schedule)
        if update % 6 == 0:
            x = generate(generator, schedule, grid=grid, draws=draws, cond=None, options=options)
            if flip:  # the wrong sign: the fake score plays the teacher
                losses = _flipped_generator_loss(teacher, fake, x, draws, options)
            else:
                losses = generator_loss(
                    teacher=teacher,
                    fake_score=fake,
                    head=None,
                    feature="",
                    x=x,
                    cond=None,
                    draws=draws,
                    options=options,
                )
            opt_g.zero_grad()
            losses["loss"].backward()
            opt_g.step()
            decay.step()
        else:
            with torch.no_grad():
                x = generate(generator, schedule, grid=grid, draws=draws, cond=None, options=options)
            losses = critic_loss(
                teacher=teacher,
                fake_score=fake,
                head=None,
                feature="",
                x=x,
                real=batch,
                cond=None,
                real_cond=None,
                draws=draws,
                options=options,
            )
            opt_f.zero_grad()
            losses["loss"].backward()
            opt_f.step()
    return start, moment_error(samples())


def _flipped_generator_loss(teacher, fake, x, draws, options):
    from distill.objectives.distribution_matching import dm_predictions, dm_surrogate, times_in_range

    t = times_in_range(teacher.schedule, draws.dm_u, low=options.dm_time_min, high=options.dm_time_max)
    real, fake_x0 = dm_predictions(
        teacher=teacher, fake_score=fake, x=x, cond=None, t=t, noise=draws.dm_noise, guidance_scale=1.0
    )
    return {"loss": dm_surrogate(x, dm_gradient(x=x.detach(), x0_real=fake_x0, x0_fake=real))}


def test_dm_gradient_points_from_the_fake_towards_the_real_prediction():
    x = torch.zeros(2, 3)
    real, fake = torch.ones(2, 3), torch.full((2, 3), 3.0)
    grad = dm_gradient(x=x, x0_real=real, x0_fake=fake)
    # descent moves x by -grad = (x0_real - x0_fake) / mean|x - x0_real|: the shift that takes the fake score's
    # estimate to the teacher's (here -2, normalised by mean |0 - 1| = 1)
    assert torch.allclose(grad, torch.full((2, 3), 2.0))
    assert torch.isfinite(dm_gradient(x=x, x0_real=x, x0_fake=fake)).all()  # 0 / 0 weight guarded


def test_dmd_updates_match_the_mixtures_moments():
    # 300 generator updates, 5 critic updates each (DMD2's ratio); seeds 0-4 all end 13-22x below the start
    start, end = train(updates=300)
    assert end <= start / 10, (start, end)


def test_the_gradient_with_its_sign_flipped_does_not():
    start, end = train(updates=100, flip=True)
    assert not end <= start / 10, (start, end)
