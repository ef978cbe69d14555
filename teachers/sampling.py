"""Samplers as small pure functions shared by teachers and students (k-diffusion style).

A *denoiser* is any callable ``(z, t) -> Prediction`` where ``t`` is a LongTensor of shape (B,); the teacher's
``predict`` (with its conditioning and guidance bound by ``functools.partial``) and student adapters both fit.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch

from teachers.parameterization import (
    Prediction,
    consistency_output,
    consistency_scalings,
    ddim_step,
    eps_from_x0,
)
from teachers.schedule import (
    alpha_sigma,
    q_sample,
)

Denoiser = Callable[[torch.Tensor, torch.Tensor], Prediction]


@torch.no_grad()
def ode_sample(
    *,
    denoiser: Denoiser,
    noise: torch.Tensor,
    times: torch.Tensor,
    alphas: torch.Tensor,
    sigmas: torch.Tensor,
    clip_x0: float | None = None,
) -> torch.Tensor:
    """The deterministic sampler of either family: from ``noise`` along the decreasing network ``times`` (n,),
    each step ``z <- alpha_next x0 + sigma_next eps`` (DDIM, eta = 0; for a flow schedule this is exactly the Euler
    step ``z + (s_next - s) (eps - x0)`` of FlowMatchEulerDiscreteScheduler). ``alphas``/``sigmas`` hold the n grid
    points' values and the end point's (n + 1). ``clip_x0`` clamps the x0-prediction and recomputes eps from it."""
    if times.ndim != 1 or len(times) == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D grid, got shape {tuple(times.shape)}")
    if alphas.shape != (len(times) + 1,) or sigmas.shape != (len(times) + 1,):
        raise ValueError("alphas and sigmas must hold one value per grid point plus the end point")
    z = noise
    batch = noise.shape[0]
    # one transfer before the loop, none per step
    times, alphas, sigmas = times.to(noise.device), alphas.to(noise), sigmas.to(noise)
    for i in range(len(times)):
        pred = denoiser(z, times[i].expand(batch))
        x0, eps = pred.x0, pred.eps
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
            eps = eps_from_x0(z=z, x0=x0, alpha=alphas[i].expand(batch), sigma=sigmas[i].expand(batch))
        z = ddim_step(x0=x0, eps=eps, alpha_next=alphas[i + 1], sigma_next=sigmas[i + 1])
    return z


def grid_alpha_sigma(schedule, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alphas, sigmas)`` (n + 1,) of a decreasing grid of network times and the end point the schedule's
    sampler steps to after the last (clean data; DDIM's ``set_alpha_to_one``), in float64."""
    alpha, sigma = schedule.alpha_sigma(times, dtype=torch.float64)
    end_alpha, end_sigma = schedule.end_alpha_sigma()
    return (
        torch.cat([alpha.cpu(), torch.tensor([end_alpha], dtype=torch.float64)]),
        torch.cat([sigma.cpu(), torch.tensor([end_sigma], dtype=torch.float64)]),
    )


@torch.no_grad()
def ddim_sample(
    *,
    denoiser: Denoiser,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    clip_x0: float | None = None,
    final_alphas_cumprod: float = 1.0,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from ``noise`` along the decreasing integer ``timesteps`` of a discrete
    schedule (:func:`ode_sample`).

    Each step goes to the next grid point, the last to clean data (``final_alphas_cumprod``, 1.0 as DDIM's
    ``set_alpha_to_one``). ``clip_x0`` clamps the x0-prediction to ``[-clip_x0, clip_x0]`` and recomputes eps
    from it, as GLIDE and diffusers' DDIM with ``clip_sample=True, use_clipped_model_output=True``. The start is
    scaled by ``sigma_T`` only through the caller's noise: diffusers' DDIM also starts from unit-variance noise.
    """
    if timesteps.ndim != 1 or len(timesteps) == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D grid, got shape {tuple(timesteps.shape)}")
    steps = timesteps.long().cpu()
    alphas, sigmas = alpha_sigma(
        alphas_cumprod=alphas_cumprod.cpu(),
        timesteps=torch.cat([steps, steps.new_tensor([-1])]),
        final_alphas_cumprod=final_alphas_cumprod,
    )
    return ode_sample(
        denoiser=denoiser,
        noise=noise,
        times=timesteps.long(),
        alphas=alphas.to(noise.dtype),
        sigmas=sigmas.to(noise.dtype),
        clip_x0=clip_x0,
    )


def per_sample_noise(
    *, seeds: torch.Tensor, indices: torch.Tensor, shape: tuple[int, ...], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Gaussian noise for rows (seed_i, index_i): each sample's noise depends only on its (seed, index), never
    on the batch size or the number of processes."""
    out = torch.empty((len(indices), *shape))
    gen = torch.Generator()
    for row, (seed, index) in enumerate(zip(seeds.tolist(), indices.tolist(), strict=True)):
        gen.manual_seed(int(seed) * 1_000_003 + int(index))
        out[row] = torch.randn(shape, generator=gen)
    return out.to(device)


def ddim_sample_steps(
    *,
    denoiser: Denoiser,
    noise: torch.Tensor,
    schedule,
    steps: int,
    spacing: str = "trailing",
    clip_x0: float | None = 1.0,
) -> torch.Tensor:
    """:func:`ode_sample` on a ``steps``-step grid of ``schedule`` (either family; trailing spacing by default for
    a discrete one: a few-step grid must start at pure noise), ending at clean data."""
    times = schedule.grid(steps, spacing=spacing)
    alphas, sigmas = grid_alpha_sigma(schedule, times)
    return ode_sample(
        denoiser=denoiser,
        noise=noise,
        times=times.to(noise.device),
        alphas=alphas.to(noise.dtype),
        sigmas=sigmas.to(noise.dtype),
        clip_x0=clip_x0,
    )


@torch.no_grad()
def consistency_sample(
    *,
    denoiser: Denoiser,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor | None = None,
    schedule=None,
    step_noise: Callable[[int], torch.Tensor] | None = None,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
    clip_x0: float | None = None,
) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, Alg. 1; LCM): at each of the decreasing ``timesteps``
    the model jumps to clean data, ``x = c_skip z + c_out x0_pred``; between steps it is re-noised to the next
    timestep, ``z = alpha_next x + sigma_next n``. The last step's ``x`` is the sample (one step: one forward).

    ``step_noise(i)`` gives the noise injected after step ``i`` (default: ``torch.randn_like``); the same noise
    as diffusers' LCMScheduler makes the result agree with it. ``schedule`` (either family) gives alpha/sigma and
    the boundary scalings; without it, ``alphas_cumprod`` and LCM's discrete scalings are used. For a flow schedule
    this is diffusers' FlowMatchLCMScheduler (``x = z - s v``, re-noised as ``(1 - s') x + s' n``).
    """
    if timesteps.ndim != 1 or len(timesteps) == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D grid, got shape {tuple(timesteps.shape)}")
    if (schedule is None) == (alphas_cumprod is None):
        raise ValueError("pass exactly one of schedule and alphas_cumprod")

    def alpha_sigma_at(t_vec: torch.Tensor):
        if schedule is not None:
            return schedule.alpha_sigma(t_vec, dtype=torch.float64)
        return alpha_sigma(alphas_cumprod=alphas_cumprod.to(noise.device), timesteps=t_vec)

    def scalings(t_vec: torch.Tensor):
        if schedule is not None:
            return schedule.consistency_scalings(
                t_vec, sigma_data=sigma_data, timestep_scaling=timestep_scaling
            )
        return consistency_scalings(timesteps=t_vec, sigma_data=sigma_data, timestep_scaling=timestep_scaling)

    z = noise
    batch = noise.shape[0]
    steps = timesteps.tolist()
    x = z
    for i in range(len(steps)):
        t_vec = timesteps[i].expand(batch).to(noise.device)
        x0 = denoiser(z, t_vec).x0
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        c_skip, c_out = scalings(t_vec)
        x = consistency_output(z=z, x0=x0, c_skip=c_skip, c_out=c_out)
        if i + 1 < len(steps):
            alpha_n, sigma_n = alpha_sigma_at(timesteps[i + 1].expand(batch).to(noise.device))
            n = step_noise(i) if step_noise is not None else torch.randn_like(x)
            z = q_sample(x0=x, eps=n.to(x), alpha=alpha_n.to(x.dtype), sigma=sigma_n.to(x.dtype))
    return x


SAMPLERS = ("auto", "ddim", "consistency")


CONSISTENCY_SCHEDULERS = ("LCMScheduler", "FlowMatchLCMScheduler")


def resolve_sampler(schedule, sampler: str = "auto") -> str:
    """``"consistency"`` for a schedule whose scheduler is an LCMScheduler or FlowMatchLCMScheduler, else
    ``"ddim"`` (the deterministic step: DDIM, or Euler for a flow schedule), unless given."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sampler != "auto":
        return sampler
    return "consistency" if schedule.scheduler_class in CONSISTENCY_SCHEDULERS else "ddim"


def keyed_step_noise(
    *, seeds: torch.Tensor, indices: torch.Tensor, shape: tuple[int, ...], device: torch.device | str
) -> Callable[[int], torch.Tensor]:
    """The noise a multistep sampler injects after step ``i``, keyed per image and per step on
    ``(seeds + 7919 (i + 1), indices)``: an image's re-noising never depends on its batch or process."""
    return lambda i: per_sample_noise(
        seeds=seeds + 7919 * (i + 1), indices=indices, shape=shape, device=device
    )


@torch.no_grad()
def sample(
    *,
    denoiser: Denoiser,
    schedule,
    noise: torch.Tensor,
    steps: int,
    sampler: str = "auto",
    spacing: str = "trailing",
    clip_x0: float | None = 1.0,
    step_noise: Callable[[int], torch.Tensor] | None = None,
    sigma_data: float = 0.5,
) -> torch.Tensor:
    """The one sampling loop behind teachers, methods and exported pipelines, for either schedule family
    (``schedule``: :class:`~teachers.schedule.NoiseSchedule` or :class:`~teachers.flow.FlowSchedule`): ``steps``
    deterministic steps (DDIM on ``spacing``; Euler on the shifted sigma grid for a flow schedule, as
    FlowMatchEulerDiscreteScheduler) or, for a consistency model (``sampler="consistency"``, or ``"auto"`` with an
    LCMScheduler / FlowMatchLCMScheduler config), multistep consistency sampling at that scheduler's timesteps
    (LCM: the config's ``original_inference_steps`` and ``timestep_scaling``) with re-noising from
    ``step_noise(i)`` (see :func:`keyed_step_noise`).

    Samples that come out NaN or inf raise FloatingPointError (one check on the result): never a blank image."""
    kind = resolve_sampler(schedule, sampler)
    if not is_step_count(steps):
        raise ValueError(f"steps must be a positive integer (sampling steps), got {steps!r}")
    if kind == "consistency":
        samples = consistency_sample(
            denoiser=denoiser,
            noise=noise,
            timesteps=schedule.consistency_grid(steps).to(noise.device),
            schedule=schedule,
            step_noise=step_noise,
            sigma_data=sigma_data,
            timestep_scaling=float(schedule.config.get("timestep_scaling", 10.0)),
            clip_x0=clip_x0,
        )
    else:
        samples = ddim_sample_steps(
            denoiser=denoiser, noise=noise, schedule=schedule, steps=steps, spacing=spacing, clip_x0=clip_x0
        )
    check_finite_samples(samples, what=f"{kind} sampling in {steps} step(s)")
    return samples


def is_step_count(value: object) -> bool:
    """Whether ``value`` is a whole number >= 1 (Python or NumPy integer, not a bool)."""
    if isinstance(value, bool):
        return False
    try:
        return operator.index(value) >= 1  # type: ignore[arg-type]
    except TypeError:
        return False


def check_finite_samples(samples: torch.Tensor, *, what: str) -> None:
    """Raise FloatingPointError when any of ``samples`` holds NaN or inf, counting the images and naming ``what``
    produced them (saved as images they would only be black)."""
    finite = torch.isfinite(samples)
    if bool(finite.all()):
        return
    bad = int((~finite).reshape(samples.shape[0], -1).any(dim=1).sum())
    raise FloatingPointError(
        f"{bad} of {samples.shape[0]} samples from {what} are NaN or inf: the network's weights or the noise are "
        "not finite, or its dtype overflows. Check the model (load it in float32 or bfloat16 rather than "
        "float16), the guidance scale and the noise"
    )
