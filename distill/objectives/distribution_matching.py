"""Distribution matching distillation's objectives (DMD, Yin et al. 2024a; DMD2, Yin et al. 2024b).

A generator ``G`` (the student, sampling in 1 to a few steps as a consistency model does) is trained so that the
distribution of its samples matches the teacher's. Three networks meet here:

* the frozen teacher, the *real score*: its x0-prediction at any noise level, with classifier-free guidance;
* the *fake score*: a denoiser of the generator's current distribution, trained on the generator's samples with
  the teacher's own denoising objective (:func:`distill.objectives.denoising.denoising_loss`);
* optionally a *critic head* on the fake score's bottleneck features (DMD2's GAN term).

The generator's distribution-matching gradient at a generated sample ``x`` (DMD eq. 7 in x0 form, DMD2's code):
noise it to a time ``t`` in ``[dm_time_min, dm_time_max]`` of the training times, ``x_t = alpha_t x + sigma_t eps``,
and move ``x`` along ``x0_real(x_t) - x0_fake(x_t)``, normalised per sample by ``mean |x - x0_real(x_t)|``
(:func:`dm_gradient`). It is applied through the surrogate ``0.5 ||x - sg(x - grad)||^2`` whose gradient in ``x``
is ``grad`` (:func:`dm_surrogate`). Every function here works over a schedule's ``alpha_sigma`` and the
networks' x0-predictions, so the same code serves the discrete (DDPM-family) and the flow-matching families.

Multi-step generators (DMD2): the generator is a consistency-style sampler on ``grid`` (its few decreasing times):
at each step it predicts clean data, which is re-noised to the next time. It is trained at a drawn step ``k`` of
the grid on an input made by *backward simulation*: the generator itself runs steps ``0 .. k-1`` from pure noise
(no gradient), so training sees the inputs sampling will (without it: the real data noised to ``grid[k]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distill.critic import CriticHead, bottleneck_features
from distill.objectives.denoising import denoising_loss
from distill.objectives.draws import NoisingDraws, Random
from teachers.conditioning import Cond
from teachers.network import denoise
from teachers.parameterization import consistency_output
from teachers.schedule import q_sample


@dataclass(frozen=True)
class DistributionMatchingOptions:
    """guidance_scale: the teacher's classifier-free guidance scale in the real score (1: none);
    dm_time_min, dm_time_max: the fraction range of training times the distribution-matching gradient is taken
    at (DMD2: 0.02, 0.98); gan_generator_weight, gan_critic_weight: the GAN term's weight in the generator's and in
    the critic's loss (0, 0: no GAN term); gan_time_max: the critic sees samples noised to a time in
    ``[0, gan_time_max]`` of the training times (DMD2's diffusion GAN; 0: the least noisy training time);
    regression_weight: weight of the regression loss on teacher-sampled pairs (DMD; 0: none); sigma_data,
    timestep_scaling: the generator's consistency boundary scalings (LCMScheduler: 0.5, 10; unused by flow
    schedules, whose x0-prediction is the identity at s = 0)."""

    guidance_scale: float = 1.0
    dm_time_min: float = 0.02
    dm_time_max: float = 0.98
    gan_generator_weight: float = 3e-3
    gan_critic_weight: float = 1e-2
    gan_time_max: float = 1.0
    regression_weight: float = 0.0
    sigma_data: float = 0.5
    timestep_scaling: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.dm_time_min < self.dm_time_max <= 1.0:
            raise ValueError(
                f"dm_time_min, dm_time_max must satisfy 0 <= dm_time_min < dm_time_max <= 1 (fractions of the "
                f"training times), got {self.dm_time_min}, {self.dm_time_max}; DMD2 uses 0.02, 0.98"
            )
        if not 0.0 <= self.gan_time_max <= 1.0:
            raise ValueError(f"gan_time_max must be in [0, 1], got {self.gan_time_max}")
        for name in ("gan_generator_weight", "gan_critic_weight", "regression_weight"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def gan(self) -> bool:
        """Whether there is a GAN term (a critic head to train)."""
        return self.gan_generator_weight > 0 or self.gan_critic_weight > 0


@dataclass(frozen=True)
class DistributionMatchingDraws:
    """One batch's draws: the generator's step index and input noise, the re-noising of backward simulation
    (one per step after the first), the distribution-matching time fraction and noise, the fake score's
    denoising draws, and the critic's time fractions and noise for generated and real samples."""

    step: torch.Tensor
    noise: torch.Tensor
    renoise: tuple[torch.Tensor, ...]
    dm_u: torch.Tensor
    dm_noise: torch.Tensor
    fake: NoisingDraws
    gan_fake_u: torch.Tensor
    gan_fake_noise: torch.Tensor
    gan_real_u: torch.Tensor
    gan_real_noise: torch.Tensor


def draw_distribution_matching(
    rng: Random, *, x0: torch.Tensor, num_steps: int, schedule
) -> DistributionMatchingDraws:
    """All draws of a batch in a fixed order (every draw is taken whether or not this batch uses it, so a
    sample's draws depend only on its key, not on the turn)."""
    b, shape, device = x0.shape[0], x0.shape, x0.device
    step = rng.randint(num_steps, b).to(device)
    noise = rng.randn(shape, dtype=x0.dtype).to(device)
    renoise = tuple(rng.randn(shape, dtype=x0.dtype).to(device) for _ in range(num_steps - 1))
    dm_u = rng.rand(b).to(device)
    dm_noise = rng.randn(shape, dtype=x0.dtype).to(device)
    fake_t = schedule.train_times(rng, b).to(device)
    fake_noise = rng.randn(shape, dtype=x0.dtype).to(device)
    gan_fake_u = rng.rand(b).to(device)
    gan_fake_noise = rng.randn(shape, dtype=x0.dtype).to(device)
    gan_real_u = rng.rand(b).to(device)
    gan_real_noise = rng.randn(shape, dtype=x0.dtype).to(device)
    return DistributionMatchingDraws(
        step=step,
        noise=noise,
        renoise=renoise,
        dm_u=dm_u,
        dm_noise=dm_noise,
        fake=NoisingDraws(t=fake_t, noise=fake_noise),
        gan_fake_u=gan_fake_u,
        gan_fake_noise=gan_fake_noise,
        gan_real_u=gan_real_u,
        gan_real_noise=gan_real_noise,
    )


def times_in_range(schedule, u: torch.Tensor, *, low: float, high: float) -> torch.Tensor:
    """Network times at fractions ``low + (high - low) u`` of the training times, least noisy first: the integer
    timestep ``floor(f T)`` of a discrete schedule, or the flow training grid's time at that position (its grid
    runs from most to least noisy, so it is read backwards)."""
    n = schedule.num_train_timesteps
    index = ((low + (high - low) * u.double()) * n).floor().long().clamp(0, n - 1)
    if schedule.family == "flow":
        grid = schedule.train_grid().flip(0).to(u.device)
        return grid[index.to(u.device)]
    return index.to(u.device)


def dm_gradient(*, x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """DMD's gradient of the generator's KL to the teacher at its samples ``x`` (descent direction negated):
    ``(x0_fake - x0_real) / mean|x - x0_real|`` per sample, non-finite entries zeroed (DMD2's normalisation)."""
    x, x0_real, x0_fake = x.float(), x0_real.float(), x0_fake.float()
    weight = (x - x0_real).abs().flatten(1).mean(1).clamp(min=1e-12)
    weight = weight.view(-1, *([1] * (x.ndim - 1)))
    return torch.nan_to_num((x0_fake - x0_real) / weight)


def dm_surrogate(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``0.5 mean((x - sg(x - grad))^2)``: a loss whose gradient in ``x`` is ``grad / x.numel()``."""
    return 0.5 * F.mse_loss(x.float(), (x.float() - grad).detach(), reduction="mean")


def generator_x0(
    net: nn.Module,
    schedule,
    z: torch.Tensor,
    t: torch.Tensor,
    cond: Cond,
    options: DistributionMatchingOptions,
) -> torch.Tensor:
    """The generator's clean sample from ``z`` at times ``t``: ``c_skip z + c_out x0_net(z, t)``, exactly the
    step a consistency scheduler (LCMScheduler / FlowMatchLCMScheduler) takes with it."""
    x0 = denoise(net, schedule, z, t, cond).x0
    c_skip, c_out = schedule.consistency_scalings(
        t, sigma_data=options.sigma_data, timestep_scaling=options.timestep_scaling
    )
    return consistency_output(z=z, x0=x0, c_skip=c_skip, c_out=c_out)


def generator_input(
    net: nn.Module,
    schedule,
    *,
    grid: torch.Tensor,
    draws: DistributionMatchingDraws,
    cond: Cond,
    x0: torch.Tensor | None,
    options: DistributionMatchingOptions,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, t)``: each sample's generator input at its drawn step ``k`` of the decreasing ``grid``.

    Step 0 is pure noise. With ``x0`` None (backward simulation) the generator (no gradient) runs steps
    ``0 .. k-1`` from that noise, re-noising its prediction to each next grid time; with ``x0`` given, the real
    samples are noised to ``grid[k]`` instead."""
    grid = grid.to(draws.noise.device)
    k = draws.step
    t = grid[k]
    if x0 is not None:
        alpha, sigma = schedule.alpha_sigma(t, dtype=draws.noise.dtype)
        z = q_sample(x0=x0, eps=draws.noise, alpha=alpha, sigma=sigma)
        return torch.where((k == 0).view(-1, *([1] * (z.ndim - 1))), draws.noise, z), t
    z = current = draws.noise
    with torch.no_grad():
        for i in range(int(k.max())):
            here = grid[i].expand(k.shape[0])
            x = generator_x0(net, schedule, current, here, cond, options)
            alpha, sigma = schedule.alpha_sigma(grid[i + 1].expand(k.shape[0]), dtype=x.dtype)
            current = q_sample(x0=x, eps=draws.renoise[i], alpha=alpha, sigma=sigma)
            z = torch.where((k == i + 1).view(-1, *([1] * (z.ndim - 1))), current, z)
    return z, t


def generate(
    net: nn.Module,
    schedule,
    *,
    grid: torch.Tensor,
    draws: DistributionMatchingDraws,
    cond: Cond,
    options: DistributionMatchingOptions,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """The generator's samples for this batch (gradients flow through the last forward only)."""
    z, t = generator_input(net, schedule, grid=grid, draws=draws, cond=cond, x0=x0, options=options)
    return generator_x0(net, schedule, z, t, cond, options)


@torch.no_grad()
def dm_predictions(
    *,
    teacher,
    fake_score: nn.Module,
    x: torch.Tensor,
    cond: Cond,
    t: torch.Tensor,
    noise: torch.Tensor,
    guidance_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0_real, x0_fake)`` at ``x`` noised to ``t``: the guided teacher's and the fake score's."""
    schedule = teacher.schedule
    alpha, sigma = schedule.alpha_sigma(t, dtype=x.dtype)
    x_t = q_sample(x0=x.detach(), eps=noise, alpha=alpha, sigma=sigma)
    guided = guidance_scale != 1.0 and cond is not None
    real = teacher.predict(x_t.to(teacher.dtype), t, cond, guidance_scale=guidance_scale if guided else None)
    fake = denoise(fake_score, schedule, x_t, t, cond)
    return real.x0.to(x.dtype), fake.x0.to(x.dtype)


def critic_logits(
    *,
    fake_score: nn.Module,
    head: CriticHead,
    feature: str,
    schedule,
    x: torch.Tensor,
    cond: Cond,
    u: torch.Tensor,
    noise: torch.Tensor,
    time_max: float,
) -> torch.Tensor:
    """The critic's logit per sample (realism): ``x`` noised to a time at fraction ``u time_max`` of the training
    times, the fake score run up to its ``feature`` module (its bottleneck), the head on those features."""
    t = times_in_range(schedule, u, low=0.0, high=max(time_max, 1e-9))
    alpha, sigma = schedule.alpha_sigma(t, dtype=x.dtype)
    x_t = q_sample(x0=x, eps=noise, alpha=alpha, sigma=sigma)
    return head(bottleneck_features(fake_score, feature, x_t, t, cond)).float()


def generator_loss(
    *,
    teacher,
    fake_score: nn.Module,
    head: CriticHead | None,
    feature: str,
    x: torch.Tensor,
    cond: Cond,
    draws: DistributionMatchingDraws,
    options: DistributionMatchingOptions,
    regression_sample: torch.Tensor | None = None,
    regression_target: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The generator's loss at its samples ``x`` (with gradients to the generator): ``dm`` + the GAN term
    (non-saturating, ``softplus(-logit)``) + the optional regression loss (MSE of the generator's one-step
    sample ``regression_sample`` to ``regression_target``, the teacher's sample from the same noise).
    The fake score and head must not require gradients here (the caller freezes them)."""
    schedule = teacher.schedule
    t = times_in_range(schedule, draws.dm_u, low=options.dm_time_min, high=options.dm_time_max)
    x0_real, x0_fake = dm_predictions(
        teacher=teacher,
        fake_score=fake_score,
        x=x,
        cond=cond,
        t=t,
        noise=draws.dm_noise,
        guidance_scale=options.guidance_scale,
    )
    grad = dm_gradient(x=x.detach(), x0_real=x0_real, x0_fake=x0_fake)
    dm = dm_surrogate(x, grad)
    total = dm
    out = {"dm_grad_norm": grad.flatten(1).norm(dim=1).mean().detach()}
    if head is not None and options.gan_generator_weight > 0:
        logits = critic_logits(
            fake_score=fake_score,
            head=head,
            feature=feature,
            schedule=schedule,
            x=x,
            cond=cond,
            u=draws.gan_fake_u,
            noise=draws.gan_fake_noise,
            time_max=options.gan_time_max,
        )
        gan = F.softplus(-logits).mean()
        total = total + options.gan_generator_weight * gan
        out["gan"] = gan.detach()
    if options.regression_weight > 0 and regression_target is not None and regression_sample is not None:
        regression = F.mse_loss(regression_sample.float(), regression_target.float())
        total = total + options.regression_weight * regression
        out["regression"] = regression.detach()
    return {"loss": total, "dm": dm.detach(), **out}


def critic_loss(
    *,
    teacher,
    fake_score: nn.Module,
    head: CriticHead | None,
    feature: str,
    x: torch.Tensor,
    real: torch.Tensor,
    cond: Cond,
    real_cond: Cond,
    draws: DistributionMatchingDraws,
    options: DistributionMatchingOptions,
) -> dict[str, torch.Tensor]:
    """The critic's loss: the fake score's denoising loss on the (detached) generated samples ``x`` in the
    teacher's parameterisation, plus the GAN classification loss ``softplus(logit_fake) + softplus(-logit_real)``
    on ``x`` and the real samples ``real``. Also returns the mean logits (``logit_real``, ``logit_fake``)."""
    schedule = teacher.schedule
    x = x.detach()
    fake = denoising_loss(net=fake_score, schedule=schedule, x0=x, cond=cond, draws=draws.fake)["loss"]
    total = fake
    out: dict[str, torch.Tensor] = {"fake_score": fake.detach()}
    if head is not None and options.gan_critic_weight > 0:
        common = {"fake_score": fake_score, "head": head, "feature": feature, "schedule": schedule}
        logit_fake = critic_logits(
            **common,
            x=x,
            cond=cond,
            u=draws.gan_fake_u,
            noise=draws.gan_fake_noise,
            time_max=options.gan_time_max,
        )
        logit_real = critic_logits(
            **common,
            x=real,
            cond=real_cond,
            u=draws.gan_real_u,
            noise=draws.gan_real_noise,
            time_max=options.gan_time_max,
        )
        gan = (F.softplus(logit_fake) + F.softplus(-logit_real)).mean()
        total = total + options.gan_critic_weight * gan
        out.update(
            gan=gan.detach(), logit_real=logit_real.mean().detach(), logit_fake=logit_fake.mean().detach()
        )
    return {"loss": total, **out}
