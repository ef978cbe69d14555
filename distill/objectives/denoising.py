"""The denoising objective of diffusion training (how the digits teachers are trained): MSE to the schedule's
target (eps, v, x0, or the flow velocity ``eps - x0`` for rectified flow) at drawn times, optionally Min-SNR
weighted (Hang et al. 2023; discrete family)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.objectives.draws import NoisingDraws, apply_keep
from teachers.conditioning import Cond
from teachers.network import call_denoiser
from teachers.parameterization import target_for
from teachers.schedule import q_sample, snr


def denoising_loss(
    *,
    net: nn.Module,
    schedule,
    x0: torch.Tensor,
    cond: Cond,
    draws: NoisingDraws,
    null_cond=None,
    min_snr_gamma: float | None = None,
) -> dict[str, torch.Tensor]:
    """``{"loss"}``: the per-sample MSE between ``net``'s output and the target, averaged (Min-SNR weighted
    with ``min_snr_gamma``). ``null_cond(cond)`` gives the dropped samples' condition."""
    alpha, sigma = schedule.alpha_sigma(draws.t, dtype=x0.dtype)
    z = q_sample(x0=x0, eps=draws.noise, alpha=alpha, sigma=sigma)
    cond = apply_keep(cond, draws.keep, null_cond=null_cond)
    out = call_denoiser(net, z, draws.t, cond)
    target = target_for(
        prediction_type=schedule.prediction_type, x0=x0, eps=draws.noise, alpha=alpha, sigma=sigma
    )
    per_sample = F.mse_loss(out.float(), target.float(), reduction="none").flatten(1).mean(1)
    if min_snr_gamma is not None:
        s = snr(alpha=alpha.float(), sigma=sigma.float())
        denominator = {"epsilon": s, "v_prediction": s + 1, "sample": torch.ones_like(s)}[
            schedule.prediction_type
        ]
        per_sample = per_sample * s.clamp(max=min_snr_gamma) / denominator
    return {"loss": per_sample.mean()}
