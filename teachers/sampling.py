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
    NoiseSchedule,
    alpha_sigma,
    lcm_timesteps,
    previous_timesteps,
    q_sample,
    timestep_grid,
)

Denoiser = Callable[[torch.Tensor, torch.Tensor], Prediction]


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
    """Deterministic DDIM (eta = 0) from ``noise`` along the decreasing integer ``timesteps``.

    Each step goes to the next grid point, the last to clean data (``final_alphas_cumprod``, 1.0 as DDIM's
    ``set_alpha_to_one``). ``clip_x0`` clamps the x0-prediction to ``[-clip_x0, clip_x0]`` and recomputes eps
    from it, as GLIDE and diffusers' DDIM with ``clip_sample=True, use_clipped_model_output=True``. The start is scaled by ``sigma_T`` only through the caller's
    noise: diffusers' DDIM also starts from unit-variance noise.
    """
    if timesteps.ndim != 1 or len(timesteps) == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D grid, got shape {tuple(timesteps.shape)}")
    acp = alphas_cumprod.to(noise.device)
    z = noise
    batch = noise.shape[0]
    for t, t_next in zip(timesteps.tolist(), previous_timesteps(timesteps=timesteps).tolist(), strict=True):
        t_vec = torch.full((batch,), t, device=noise.device, dtype=torch.long)
        pred = denoiser(z, t_vec)
        x0, eps = pred.x0, pred.eps
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
            alpha, sigma = alpha_sigma(alphas_cumprod=acp, timesteps=t_vec)
            eps = eps_from_x0(z=z, x0=x0, alpha=alpha.to(z.dtype), sigma=sigma.to(z.dtype))
        nxt = torch.full((batch,), t_next, device=noise.device, dtype=torch.long)
        alpha_n, sigma_n = alpha_sigma(
            alphas_cumprod=acp, timesteps=nxt, final_alphas_cumprod=final_alphas_cumprod
        )
        z = ddim_step(x0=x0, eps=eps, alpha_next=alpha_n.to(z.dtype), sigma_next=sigma_n.to(z.dtype))
    return z


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
    schedule: NoiseSchedule,
    steps: int,
    spacing: str = "trailing",
    clip_x0: float | None = 1.0,
) -> torch.Tensor:
    """:func:`ddim_sample` on a ``steps``-step grid of ``schedule`` (trailing spacing by default: a few-step
    grid must start at pure noise), ending where the config's ``set_alpha_to_one`` says."""
    grid = schedule.grid(steps, spacing=spacing).to(noise.device)
    return ddim_sample(
        denoiser=denoiser,
        noise=noise,
        timesteps=grid,
        alphas_cumprod=schedule.alphas_cumprod,
        clip_x0=clip_x0,
        final_alphas_cumprod=schedule.final_alphas_cumprod,
    )


@torch.no_grad()
def consistency_sample(
    *,
    denoiser: Denoiser,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    step_noise: Callable[[int], torch.Tensor] | None = None,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
    clip_x0: float | None = None,
) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, Alg. 1; LCM): at each of the decreasing ``timesteps``
    the model jumps to clean data, ``x = c_skip z + c_out x0_pred``; between steps it is re-noised to the next
    timestep, ``z = alpha_next x + sigma_next n``. The last step's ``x`` is the sample (one step: one forward).

    ``step_noise(i)`` gives the noise injected after step ``i`` (default: ``torch.randn_like``); the same noise
    as diffusers' LCMScheduler makes the result agree with it.
    """
    if timesteps.ndim != 1 or len(timesteps) == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D grid, got shape {tuple(timesteps.shape)}")
    acp = alphas_cumprod.to(noise.device)
    z = noise
    batch = noise.shape[0]
    steps = timesteps.tolist()
    x = z
    for i, t in enumerate(steps):
        t_vec = torch.full((batch,), t, device=noise.device, dtype=torch.long)
        x0 = denoiser(z, t_vec).x0
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        c_skip, c_out = consistency_scalings(
            timesteps=t_vec, sigma_data=sigma_data, timestep_scaling=timestep_scaling
        )
        x = consistency_output(z=z, x0=x0, c_skip=c_skip, c_out=c_out)
        if i + 1 < len(steps):
            nxt = torch.full((batch,), steps[i + 1], device=noise.device, dtype=torch.long)
            alpha_n, sigma_n = alpha_sigma(alphas_cumprod=acp, timesteps=nxt)
            n = step_noise(i) if step_noise is not None else torch.randn_like(x)
            z = q_sample(x0=x, eps=n.to(x), alpha=alpha_n.to(x.dtype), sigma=sigma_n.to(x.dtype))
    return x


SAMPLERS = ("auto", "ddim", "consistency")


def resolve_sampler(schedule: NoiseSchedule, sampler: str = "auto") -> str:
    """``"consistency"`` for a schedule whose scheduler is an LCMScheduler, else ``"ddim"`` (unless given)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sampler != "auto":
        return sampler
    return "consistency" if schedule.scheduler_class == "LCMScheduler" else "ddim"


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
    schedule: NoiseSchedule,
    noise: torch.Tensor,
    steps: int,
    sampler: str = "auto",
    spacing: str = "trailing",
    clip_x0: float | None = 1.0,
    step_noise: Callable[[int], torch.Tensor] | None = None,
    sigma_data: float = 0.5,
) -> torch.Tensor:
    """The one sampling loop behind teachers, methods and exported pipelines: ``steps`` steps of DDIM on
    ``spacing`` or, for a consistency model (``sampler="consistency"``, or ``"auto"`` with an LCMScheduler
    config), multistep consistency sampling at LCM's timesteps with the config's ``original_inference_steps``
    and ``timestep_scaling`` and re-noising from ``step_noise(i)`` (see :func:`keyed_step_noise`).

    Samples that come out NaN or inf raise FloatingPointError (one check on the result): never a blank image."""
    kind = resolve_sampler(schedule, sampler)
    if not is_step_count(steps):
        raise ValueError(f"steps must be a positive integer (sampling steps), got {steps!r}")
    if kind == "consistency":
        timesteps = lcm_timesteps(
            num_train_timesteps=schedule.num_train_timesteps,
            num_inference_steps=steps,
            original_steps=int(schedule.config.get("original_inference_steps", 50)),
        )
        samples = consistency_sample(
            denoiser=denoiser,
            noise=noise,
            timesteps=timesteps.to(noise.device),
            alphas_cumprod=schedule.alphas_cumprod,
            step_noise=step_noise,
            sigma_data=sigma_data,
            timestep_scaling=float(schedule.config.get("timestep_scaling", 10.0)),
            clip_x0=clip_x0,
        )
    else:
        grid = timestep_grid(
            num_inference_steps=steps,
            num_train_timesteps=schedule.num_train_timesteps,
            spacing=spacing,  # type: ignore[arg-type]
            steps_offset=schedule.steps_offset,
        )
        samples = ddim_sample(
            denoiser=denoiser,
            noise=noise,
            timesteps=grid.to(noise.device),
            alphas_cumprod=schedule.alphas_cumprod,
            clip_x0=clip_x0,
            final_alphas_cumprod=schedule.final_alphas_cumprod,
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
