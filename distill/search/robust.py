"""Robust training (SnapFusion, Li et al. 2023): the network trains while random removable units are skipped, so
that it computes something sensible without any of them, and skipping one afterwards measures what that unit is
worth rather than how unused the rest of the network is to its absence.

:class:`UnitDropping` is the ``unit_dropping`` option of every method: at each optimizer step every removable unit
of the student (:func:`students.units.removable_units`) is skipped with ``probability``, the set drawn from the
run's seed and the global step alone (so every process and every resumed run skips the same units at the same
step). Validation, sampling and export run the whole network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from distill.rng import sample_seed
from students.units import KINDS, Unit, check_units, removable_units, skipping

#: the key of the unit-dropping draws (apart from every per-sample draw of the same step)
DRAW_INDEX = -7


class UnitDropping:
    """Skip each removable unit of the student with ``probability`` at every training step.

    Args:
        probability: the chance of each unit being skipped at a step (SnapFusion drops blocks stochastically;
            0.1-0.25 keeps the network trainable while every unit is often absent).
        kinds: the unit kinds that may be skipped (``resnet``, ``attention``, ``mid_block``).
        exclude: units never skipped (module paths, e.g. ``up_blocks.2.resnets.1``).
    """

    def __init__(
        self,
        probability: float = 0.15,
        kinds: Sequence[str] = KINDS,
        exclude: Sequence[str] = (),
    ) -> None:
        if not 0.0 < float(probability) < 1.0:
            raise ValueError(
                f"unit_dropping.probability must be in (0, 1) (the chance a unit is skipped at a step), got "
                f"{probability}"
            )
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"unit_dropping.kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
        self.probability = float(probability)
        self.kinds = tuple(kinds)
        self.exclude = tuple(exclude)
        self.units: list[Unit] = []

    def bind(self, student: nn.Module) -> None:
        """Find the units of ``student`` this option draws from; refuses a student without any."""
        try:
            units = removable_units(student, kinds=self.kinds)
        except ValueError as error:
            raise ValueError(f"unit_dropping: {error}") from None
        check_units(student, self.exclude, argument="unit_dropping.exclude")
        self.units = [u for u in units if u.name not in set(self.exclude)]
        if not self.units:
            raise ValueError(
                f"unit_dropping: the student ({type(student).__name__}) has no units of kinds {self.kinds} left "
                f"to drop (excluded {list(self.exclude)})"
            )

    def draw(self, *, seed: int, step: int) -> list[str]:
        """The units skipped at ``step``: each with ``probability``, from (seed, step) alone."""
        gen = torch.Generator().manual_seed(sample_seed(seed=seed, step=step, index=DRAW_INDEX))
        keep = torch.rand(len(self.units), generator=gen) >= self.probability
        return [unit.name for unit, kept in zip(self.units, keep.tolist(), strict=True) if not kept]

    @contextlib.contextmanager
    def applied(self, student: nn.Module, *, seed: int, step: int) -> Iterator[list[str]]:
        """Run ``student`` without this step's units inside the block; yields their names."""
        names = self.draw(seed=seed, step=step)
        with skipping(student, names):
            yield names

    def __repr__(self) -> str:
        return f"UnitDropping(probability={self.probability}, kinds={list(self.kinds)}, exclude={list(self.exclude)})"
