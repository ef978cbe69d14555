"""The random draws of one training batch, taken in a fixed order from a keyed source (:mod:`distill.rng`).

Every objective is a deterministic function of its draws: the LightningModule draws them (keyed on seed, global
step and global sample index, so they do not depend on the process count) and passes them in; tests and
benchmarks pass the same draws and get the same losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from teachers.conditioning import Cond, where_cond


class Random(Protocol):
    """What the draws need of a random source (``KeyedRandom`` and ``GeneratorRandom`` both fit)."""

    def randn(self, shape, *, dtype: torch.dtype = torch.float32) -> torch.Tensor: ...

    def rand(self, batch: int) -> torch.Tensor: ...

    def randint(self, high: int, batch: int) -> torch.Tensor: ...


def draw_keep(rng: Random, *, batch: int, cond: Cond, prob: float) -> torch.Tensor | None:
    """Which samples keep their condition under condition dropout with probability ``prob`` (None: all keep;
    nothing is drawn without a condition or with ``prob <= 0``)."""
    if cond is None or prob <= 0:
        return None
    return rng.rand(batch) >= prob


def apply_keep(cond: Cond, keep: torch.Tensor | None, *, null_cond) -> Cond:
    """``cond`` with the dropped samples' condition replaced by ``null_cond(cond)`` (null class, empty prompt)."""
    if cond is None or keep is None:
        return cond
    return where_cond(keep, cond, null_cond(cond))


@dataclass(frozen=True)
class NoisingDraws:
    """One noisy batch: the network time of each sample, its Gaussian noise, and condition dropout."""

    t: torch.Tensor
    noise: torch.Tensor
    keep: torch.Tensor | None = None


def draw_noising(
    rng: Random,
    *,
    x0: torch.Tensor,
    schedule,
    cond: Cond,
    cond_drop_prob: float,
    density: str = "uniform",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
) -> NoisingDraws:
    """Times from the schedule's training distribution (``density``: uniform, or SD3's logit-normal with
    ``logit_mean``/``logit_std``), then noise, then the dropout draw (in this order)."""
    t = schedule.train_times(
        rng, x0.shape[0], density=density, logit_mean=logit_mean, logit_std=logit_std
    ).to(x0.device)
    noise = rng.randn(x0.shape, dtype=x0.dtype).to(x0.device)
    keep = draw_keep(rng, batch=x0.shape[0], cond=cond, prob=cond_drop_prob)
    return NoisingDraws(t=t, noise=noise, keep=keep)


def guidance_w(rng: Random, *, batch: int, scale_min: float, scale_max: float) -> torch.Tensor:
    """Per-sample guidance drawn uniformly over the CFG-scale range ``[scale_min, scale_max]``, returned in LCM's
    form ``w = scale - 1`` (what the teacher's guided step and the student's embedding take)."""
    w_min, w_max = scale_min - 1.0, scale_max - 1.0
    return w_min + (w_max - w_min) * rng.rand(batch)
