"""Consistency distillation's objective (Song et al. 2023) as Latent Consistency Models do it (Luo et al. 2023).

On a clean batch x0, with draws (solver start s and target time t on the skipping grid, guidance w, noise):
  1. ``z_s = alpha_s x0 + sigma_s eps``; the student's consistency output
     ``f(z_s, s) = c_skip(s) z_s + c_out(s) x0_student(z_s, s, w)``;
  2. one DDIM step of the frozen teacher with CFG at scale ``1 + w`` from s to t (under no_grad);
  3. the target ``f_target(z_t, t)`` from the EMA target network (no_grad);
  4. pseudo-Huber (elementwise, c = 0.001, as diffusers' LCM script) or L2 between the two.
Everything runs over the schedule's ``alpha_sigma`` and boundary scalings at the network's own times.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distill.losses import CONSISTENCY_LOSSES, consistency_loss
from distill.objectives.draws import Random, apply_keep, draw_keep, guidance_w
from teachers.conditioning import Cond
from teachers.network import denoise
from teachers.parameterization import consistency_output, ddim_step, guidance_scale_embedding
from teachers.schedule import q_sample
from teachers.transformer import takes_guidance


@dataclass(frozen=True)
class ConsistencyOptions:
    """loss: "huber" or "l2"; huber_c: the pseudo-Huber c; sigma_data, timestep_scaling: boundary scalings
    (LCMScheduler: 0.5, 10); guided: the teacher's step runs CFG at ``1 + w``; embed_dim: width of the student's
    guidance embedding (None: the student takes no ``timestep_cond``)."""

    loss: str = "huber"
    huber_c: float = 0.001
    sigma_data: float = 0.5
    timestep_scaling: float = 10.0
    guided: bool = False
    embed_dim: int | None = None

    def __post_init__(self) -> None:
        if self.loss not in CONSISTENCY_LOSSES:
            raise ValueError(f"loss must be one of {CONSISTENCY_LOSSES}, got {self.loss!r}")


@dataclass(frozen=True)
class ConsistencyDraws:
    """Solver start ``s`` and target ``t`` (network times), LCM-form guidance ``w``, dropout, noise."""

    s: torch.Tensor
    t: torch.Tensor
    w: torch.Tensor
    keep: torch.Tensor | None
    noise: torch.Tensor


def draw_consistency(
    rng: Random,
    *,
    x0: torch.Tensor,
    solver_grid: torch.Tensor,
    guidance_min: float,
    guidance_max: float,
    cond: Cond,
    cond_drop_prob: float,
) -> ConsistencyDraws:
    """A uniform point of the increasing ``solver_grid`` and the grid point before it (0 before the first), a
    guidance scale, condition dropout, then noise (in this order)."""
    b = x0.shape[0]
    index = rng.randint(len(solver_grid), b)
    grid = solver_grid.to(x0.device)
    previous = torch.cat([grid.new_zeros(1), grid[:-1]])
    w = guidance_w(rng, batch=b, scale_min=guidance_min, scale_max=guidance_max)
    keep = draw_keep(rng, batch=b, cond=cond, prob=cond_drop_prob)
    noise = rng.randn(x0.shape, dtype=x0.dtype)
    return ConsistencyDraws(s=grid[index], t=previous[index], w=w, keep=keep, noise=noise)


def w_embedding(w: torch.Tensor, embed_dim: int | None) -> torch.Tensor | None:
    """The student's ``timestep_cond`` for LCM-form guidance ``w`` (None without an embedding input)."""
    return None if embed_dim is None else guidance_scale_embedding(w=w, dim=embed_dim).to(w.device)


def consistency_function(
    net: nn.Module,
    schedule,
    z: torch.Tensor,
    t: torch.Tensor,
    cond: Cond,
    w_emb,
    options: ConsistencyOptions,
    w: torch.Tensor | None = None,
) -> torch.Tensor:
    """``f(z, t) = c_skip(t) z + c_out(t) x0_net(z, t)``: the identity at ``t = 0``. The network takes LCM-form
    guidance ``w`` as ``w_emb`` (its ``timestep_cond``), or as the scale ``1 + w`` when it embeds guidance itself
    (FLUX-dev)."""
    if takes_guidance(net):  # FLUX-dev-style students take the scale 1 + w itself as an input
        x0 = denoise(net, schedule, z, t, cond, guidance_scale=None if w is None else 1.0 + w).x0
    else:
        x0 = denoise(net, schedule, z, t, cond, timestep_cond=w_emb).x0
    c_skip, c_out = schedule.consistency_scalings(
        t, sigma_data=options.sigma_data, timestep_scaling=options.timestep_scaling
    )
    return consistency_output(z=z, x0=x0, c_skip=c_skip, c_out=c_out)


@torch.no_grad()
def teacher_solver_step(
    teacher, z_s: torch.Tensor, s: torch.Tensor, t: torch.Tensor, cond: Cond, w: torch.Tensor, *, guided: bool
) -> torch.Tensor:
    """One DDIM step of the teacher from ``s`` to ``t``, with CFG at scale ``1 + w`` (per sample) if ``guided``."""
    guided = guided and cond is not None
    pred = teacher.predict(z_s.to(teacher.dtype), s, cond, guidance_scale=(1.0 + w) if guided else None)
    alpha_t, sigma_t = teacher.schedule.alpha_sigma(t, dtype=z_s.dtype)
    return ddim_step(
        x0=pred.x0.to(z_s.dtype), eps=pred.eps.to(z_s.dtype), alpha_next=alpha_t, sigma_next=sigma_t
    )


def consistency_distillation_loss(
    *,
    teacher,
    student: nn.Module,
    target: nn.Module,
    x0: torch.Tensor,
    cond: Cond,
    draws: ConsistencyDraws,
    options: ConsistencyOptions,
) -> dict[str, torch.Tensor]:
    """``{"loss", "consistency"}`` of one batch; ``target`` is the EMA target network (no gradients)."""
    schedule = teacher.schedule
    w_emb = w_embedding(draws.w, options.embed_dim)
    student_cond = apply_keep(cond, draws.keep, null_cond=teacher.null_cond)
    alpha_s, sigma_s = schedule.alpha_sigma(draws.s, dtype=x0.dtype)
    z_s = q_sample(x0=x0, eps=draws.noise, alpha=alpha_s, sigma=sigma_s)
    pred = consistency_function(student, schedule, z_s, draws.s, student_cond, w_emb, options, draws.w)
    z_t = teacher_solver_step(teacher, z_s, draws.s, draws.t, cond, draws.w, guided=options.guided)
    with torch.no_grad():
        goal = consistency_function(target, schedule, z_t, draws.t, student_cond, w_emb, options, draws.w)
    loss = consistency_loss(pred, goal, kind=options.loss, huber_c=options.huber_c)
    return {"loss": loss, "consistency": loss.detach()}
