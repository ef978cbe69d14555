"""The search space of a pruned student and the greedy step through it.

A :class:`Candidate` is the teacher's UNet without some removable units, with every stage's width scaled by one
multiplier and optionally separable convolutions: exactly what :func:`students.pruned.pruned_unet` builds.
:func:`greedy_removal` walks from a shape (width, separable) towards a MAC budget by removing units in order of
measured quality lost per MAC saved (SnapFusion's action value, from an :class:`~distill.search.importance.
ImportanceReport` of the robust-trained network), counting the candidate's MACs exactly at each step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from students.common import TeacherLike, teacher_config


@dataclass(frozen=True)
class Candidate:
    """A pruned student: ``removed_units`` (module paths), ``width`` (every stage's channels times this, rounded
    to the norm groups) and ``separable`` (depthwise-separable 3x3 convolutions in the resnets)."""

    removed_units: tuple[str, ...] = ()
    width: float = 1.0
    separable: bool = False

    def student_kwargs(self, teacher: TeacherLike) -> dict[str, Any]:
        """The :func:`students.pruned.pruned_unet` arguments (besides ``teacher``) that build this candidate."""
        config = teacher_config(teacher)
        channels = list(config["block_out_channels"])
        groups = int(config.get("norm_num_groups", 32))
        kwargs: dict[str, Any] = {
            "removed_units": list(self.removed_units),
            "separable_convs": self.separable,
        }
        if self.width != 1.0:
            widths = [max(round(c * self.width), 1) for c in channels]
            while any(w % groups for w in widths) and groups > 1:  # narrow stages: fewer groups
                groups //= 2
            kwargs["block_out_channels"] = widths
            kwargs["norm_num_groups"] = groups
        return kwargs

    def build(self, teacher: TeacherLike) -> nn.Module:
        from students.pruned import pruned_unet

        return pruned_unet(teacher, **self.student_kwargs(teacher))


def candidate_macs(teacher: TeacherLike, candidate: Candidate) -> float:
    """MACs of one batch-1 forward of the candidate (fvcore and our handles, on a built network)."""
    from distill.flops import count_macs, example_inputs

    network = candidate.build(teacher)
    return float(count_macs(network, example_inputs(network)).total)


def candidate_latency(
    teacher: TeacherLike, candidate: Candidate, *, repeats: int = 30, warmup: int = 5
) -> float:
    """Median wall time (ms) of the candidate's batch-1 forward on this machine (run it with the cores idle)."""
    import statistics
    import time

    import torch

    from distill.search.importance import batch1_forward

    forward = batch1_forward(candidate.build(teacher).eval())
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            forward()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


@dataclass
class GreedyResult:
    candidate: Candidate | None
    macs: float
    #: the units removed in order, with the cost (MACs, or ms under a latency budget) after each removal
    path: list[tuple[str, float]] = field(default_factory=list)
    #: the sum of the removed units' measured quality changes (the additive estimate of what removal costs)
    predicted_delta: float = 0.0
    #: the candidate's measured batch-1 latency (ms), under a latency budget
    latency_ms: float | None = None


def action_order(report: Any, *, cost: str = "macs") -> list[Any]:
    """The report's units by measured quality change per MAC (or per ms of latency) saved, cheapest first (ties:
    more saved first)."""
    if cost == "latency":
        if any(u.latency_ms is None for u in report.units):
            raise ValueError(
                "a latency budget orders units by their measured latency: measure the report with latency"
            )
        return sorted(
            report.units, key=lambda u: (max(u.delta, 0.0) / max(u.latency_ms, 1e-6), -u.latency_ms)
        )
    return sorted(report.units, key=lambda u: (max(u.delta, 0.0) / max(u.macs_saved, 1.0), -u.macs_saved))


def greedy_removal(
    teacher: TeacherLike,
    report: Any,
    *,
    budget_macs: float | None = None,
    budget_latency_ms: float | None = None,
    width: float = 1.0,
    separable: bool = False,
    exclude: Sequence[str] = (),
) -> GreedyResult:
    """Remove units from the shape (``width``, ``separable``) in :func:`action_order` until the candidate's MACs
    are within ``budget_macs`` (counted) or its batch-1 latency within ``budget_latency_ms`` (measured); one of
    the two. ``candidate`` is None when removing every unit does not get there."""
    if (budget_macs is None) == (budget_latency_ms is None):
        raise ValueError("greedy_removal takes one budget: budget_macs or budget_latency_ms")
    latency = budget_latency_ms is not None
    budget = float(budget_latency_ms if latency else budget_macs)

    def cost(candidate: Candidate) -> float:
        return candidate_latency(teacher, candidate) if latency else candidate_macs(teacher, candidate)

    removed: dict[str, float] = {}  # name -> its measured quality change
    current = Candidate((), width, separable)
    spent = cost(current)
    path: list[tuple[str, float]] = []
    for unit in action_order(report, cost="latency" if latency else "macs"):
        if spent <= budget:
            break
        if unit.name in exclude or any(unit.name.startswith(r + ".") for r in removed):
            continue  # inside a unit already removed: it went with it
        for inner in [r for r in removed if r.startswith(unit.name + ".")]:
            del removed[inner]  # the outer unit takes its inner ones with it
        removed[unit.name] = max(unit.delta, 0.0)
        current = Candidate(tuple(removed), width, separable)
        spent = cost(current)
        path.append((unit.name, spent))
    return GreedyResult(
        candidate=current if spent <= budget else None,
        macs=candidate_macs(teacher, current) if latency else spent,
        path=path,
        predicted_delta=sum(removed.values()),
        latency_ms=spent if latency else None,
    )


def random_removal(
    teacher: TeacherLike,
    units: Sequence[str],
    *,
    budget_macs: float,
    width: float = 1.0,
    separable: bool = False,
    seed: int = 0,
) -> GreedyResult:
    """The baseline of the search: remove ``units`` in a seeded random order (instead of by measured value) from
    the same shape until the candidate's MACs are within ``budget_macs``."""
    import torch

    order = [
        units[i] for i in torch.randperm(len(units), generator=torch.Generator().manual_seed(seed)).tolist()
    ]
    removed: list[str] = []
    current = Candidate((), width, separable)
    macs = candidate_macs(teacher, current)
    path: list[tuple[str, float]] = []
    for name in order:
        if macs <= budget_macs:
            break
        if any(name.startswith(r + ".") for r in removed):
            continue
        removed = [r for r in removed if not r.startswith(name + ".")] + [name]
        current = Candidate(tuple(removed), width, separable)
        macs = candidate_macs(teacher, current)
        path.append((name, macs))
    return GreedyResult(candidate=current if macs <= budget_macs else None, macs=macs, path=path)
