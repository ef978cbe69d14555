"""Progressive distillation's objective (Salimans & Ho 2022; guided: Meng et al. 2023).

Two DDIM steps of the (current round's) teacher from ``s`` to ``mid`` to ``end`` make one student step from ``s``
to ``end`` (on a flow schedule a DDIM step is exactly an Euler step, so this is "two teacher Euler steps -> one
student step"); the student regresses the x0 for which one DDIM step lands where the teacher's two did (closed form),
weighted by the truncated SNR ``max(SNR, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distill.objectives.consistency import w_embedding
from distill.objectives.draws import Random, guidance_w
from teachers.conditioning import Cond
from teachers.network import denoise
from teachers.parameterization import ddim_step, progressive_x_target, truncated_snr_weight
from teachers.schedule import q_sample


@dataclass(frozen=True)
class ProgressiveOptions:
    """guided: the frozen teacher runs CFG at ``1 + w``; embed_dim: width of the guidance embedding (None:
    none)."""

    guided: bool = False
    embed_dim: int | None = None


@dataclass(frozen=True)
class ProgressiveDraws:
    """The index of each sample's start on the teacher grid (even: student steps start there), LCM-form
    guidance ``w`` and noise."""

    start: torch.Tensor
    w: torch.Tensor
    noise: torch.Tensor


def draw_progressive(
    rng: Random, *, x0: torch.Tensor, grid: torch.Tensor, guidance_min: float, guidance_max: float
) -> ProgressiveDraws:
    b = x0.shape[0]
    start = 2 * rng.randint(len(grid) // 2, b)
    w = guidance_w(rng, batch=b, scale_min=guidance_min, scale_max=guidance_max)
    return ProgressiveDraws(start=start, w=w, noise=rng.randn(x0.shape, dtype=x0.dtype))


@torch.no_grad()
def round_teacher_prediction(teacher, round_teacher, z, t, cond, w, w_emb, options: ProgressiveOptions):
    """The current round's teacher at (z, t): the frozen teacher (CFG at ``1 + w`` when guided) in round 1, else
    the previous round's student taking ``w`` through ``timestep_cond``."""
    if round_teacher is None:  # round 1: the frozen teacher, with CFG when guided
        guided = cond is not None and options.guided
        return teacher.predict(z.to(teacher.dtype), t, cond, guidance_scale=(1.0 + w) if guided else None)
    return denoise(round_teacher, teacher.schedule, z, t, cond, timestep_cond=w_emb)


def progressive_distillation_loss(
    *,
    teacher,
    student: nn.Module,
    x0: torch.Tensor,
    cond: Cond,
    draws: ProgressiveDraws,
    grid: torch.Tensor,
    options: ProgressiveOptions,
    round_teacher: nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """``{"loss"}`` of one batch on the current round's decreasing teacher ``grid``; ``round_teacher`` is the
    previous round's student (None in round 1, where the frozen teacher steps)."""
    schedule = teacher.schedule
    grid = grid.to(x0.device)
    nxt = schedule.next_times(grid)
    s, mid, end = grid[draws.start], nxt[draws.start], nxt[draws.start + 1]
    w_emb = w_embedding(draws.w, options.embed_dim)
    alpha_s, sigma_s = schedule.alpha_sigma(s, dtype=x0.dtype)
    z_s = q_sample(x0=x0, eps=draws.noise, alpha=alpha_s, sigma=sigma_s)
    with torch.no_grad():
        p1 = round_teacher_prediction(teacher, round_teacher, z_s, s, cond, draws.w, w_emb, options)
        alpha_m, sigma_m = schedule.alpha_sigma(mid, dtype=torch.float32)
        z_mid = ddim_step(x0=p1.x0.float(), eps=p1.eps.float(), alpha_next=alpha_m, sigma_next=sigma_m)
        p2 = round_teacher_prediction(
            teacher, round_teacher, z_mid, mid.clamp(min=0), cond, draws.w, w_emb, options
        )
        alpha_e, sigma_e = schedule.alpha_sigma(end, dtype=torch.float32)
        z_end = ddim_step(x0=p2.x0.float(), eps=p2.eps.float(), alpha_next=alpha_e, sigma_next=sigma_e)
        goal = progressive_x_target(
            z=z_s, z_end=z_end, alpha=alpha_s, sigma=sigma_s, alpha_end=alpha_e, sigma_end=sigma_e
        )
    x_student = denoise(student, schedule, z_s, s, cond, timestep_cond=w_emb).x0
    weight = truncated_snr_weight(alpha=alpha_s, sigma=sigma_s)
    per_sample = (x_student.float() - goal.float()).pow(2).flatten(1).mean(1)
    return {"loss": (weight * per_sample).mean()}
