"""Trajectory distillation: the student matches its teacher's outputs at exactly the inputs the teacher sees while
it samples (its own trajectory, with its own scheduler and step counts).

This is how a full-precision diffusion network is distilled into its quantized copy without data (EfficientDM,
He et al. 2023; Q-Diffusion, Li et al. 2023, calibrates on the same inputs): the inputs that matter are the ones
the deployed sampler produces, at its few timesteps, from its own earlier outputs, not real images noised at
uniform times. The teacher is any sampler (``teachers.DiffusionTeacher``: DDIM, Euler or multistep consistency
steps, with or without guidance); the student is called with the very arguments the teacher's network received.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from teachers.conditioning import Cond

__all__ = [
    "TRAJECTORY_LOSSES",
    "TrajectoryCall",
    "TrajectoryDraws",
    "TrajectoryOptions",
    "draw_trajectory",
    "network_output",
    "record_trajectory",
    "trajectory_matching_loss",
]

#: how far re-noising seeds range: ``teachers.sampling`` keys a generator on ``seed * 1_000_003 + index``, which
#: must stay inside a 64-bit seed
SEED_RANGE = 2**40
TRAJECTORY_LOSSES = ("mse", "huber")


@dataclass(frozen=True)
class TrajectoryOptions:
    """steps: the step counts whose trajectories are matched (each in every batch); guidance_scale: the teacher's
    while sampling (1: none); loss: "mse" (per element) or "huber" (LCM/iCT's pseudo-Huber distance per sample,
    ``sqrt(||d||^2 + c^2) - c`` with ``c = huber_c``)."""

    steps: tuple[int, ...] = (4,)
    guidance_scale: float | None = 1.0
    loss: str = "mse"
    huber_c: float = 0.001

    def __post_init__(self) -> None:
        if self.loss not in TRAJECTORY_LOSSES:
            raise ValueError(f"loss must be one of {TRAJECTORY_LOSSES}, got {self.loss!r}")
        if not self.steps:
            raise ValueError("steps must name at least one step count")


@dataclass(frozen=True)
class TrajectoryCall:
    """One call of the teacher's network while sampling: its arguments and its output."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: torch.Tensor


@dataclass(frozen=True)
class TrajectoryDraws:
    """One batch's randomness: the starting noise of each step count's trajectory (in ``steps`` order) and the
    per-sample seeds of the re-noising between multistep consistency steps."""

    noise: tuple[torch.Tensor, ...]
    seeds: torch.Tensor


def draw_trajectory(rng, *, batch: int, shape: Sequence[int], steps: Sequence[int]) -> TrajectoryDraws:
    """Draw, in this order, one starting noise per step count (``(batch, *shape)``) and one re-noising seed per
    sample, from ``rng`` (keyed :class:`distill.rng.KeyedRandom` in training, one generator in validation)."""
    noise = tuple(rng.randn((batch, *shape)) for _ in steps)
    seeds = rng.randint(SEED_RANGE, batch).long().cpu()
    return TrajectoryDraws(noise=noise, seeds=seeds)


def network_output(out: Any) -> torch.Tensor:
    """The output tensor of a network call (``.sample`` of a diffusers output, the first of a tuple)."""
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, tuple | list):
        return out[0]
    return out


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_detached(v) for v in value)
    return value


@torch.no_grad()
def record_trajectory(
    teacher,
    *,
    cond: Cond,
    noise: torch.Tensor,
    steps: int,
    guidance_scale: float | None,
    seeds: torch.Tensor,
    indices: torch.Tensor,
) -> list[TrajectoryCall]:
    """Sample with ``teacher`` (:meth:`teachers.DiffusionTeacher.sample`, its own scheduler) in ``steps`` steps and
    return every call its network received, in order, with the output it gave."""
    calls: list[TrajectoryCall] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        calls.append(TrajectoryCall(_detached(args), _detached(kwargs), network_output(out).detach()))

    handle = teacher.unet.register_forward_hook(hook, with_kwargs=True)
    try:
        teacher.sample(cond, noise, steps=steps, guidance_scale=guidance_scale, seeds=seeds, indices=indices)
    finally:
        handle.remove()
    if not calls:
        raise RuntimeError("the teacher sampled without calling its network; nothing to distil")
    return calls


def _distance(got: torch.Tensor, target: torch.Tensor, *, loss: str, huber_c: float) -> torch.Tensor:
    if loss == "mse":
        return F.mse_loss(got.float(), target.float())
    diff = (got.float() - target.float()).pow(2).flatten(1).sum(1)
    return (torch.sqrt(diff + huber_c**2) - huber_c).mean()


def trajectory_matching_loss(
    *,
    teacher,
    student: nn.Module,
    cond: Cond,
    draws: TrajectoryDraws,
    options: TrajectoryOptions,
) -> dict[str, torch.Tensor]:
    """``mean over calls of d(student(inputs), teacher(inputs))`` over the teacher's trajectories at each step
    count of ``options.steps``, started from ``draws`` (``d``: see :class:`TrajectoryOptions`).

    Returns ``loss`` and ``steps_<n>`` (the mean distance along the ``n``-step trajectory, detached)."""
    if len(draws.noise) != len(options.steps):
        raise ValueError(
            f"draws hold {len(draws.noise)} starting noises for {len(options.steps)} step counts {options.steps}; "
            "draw them with draw_trajectory(steps=options.steps)"
        )
    batch = draws.seeds.shape[0]
    indices = torch.arange(batch)
    terms: dict[str, torch.Tensor] = {}
    total, count = None, 0
    for n, noise in zip(options.steps, draws.noise, strict=True):
        calls = record_trajectory(
            teacher,
            cond=cond,
            noise=noise,
            steps=n,
            guidance_scale=options.guidance_scale,
            seeds=draws.seeds,
            indices=indices,
        )
        per_count = []
        for call in calls:
            got = network_output(student(*call.args, **call.kwargs))
            per_count.append(_distance(got, call.output, loss=options.loss, huber_c=options.huber_c))
        subtotal = torch.stack(per_count).sum()
        total = subtotal if total is None else total + subtotal
        count += len(per_count)
        terms[f"steps_{n}"] = (subtotal / len(per_count)).detach()
    return {"loss": total / count, **terms}
