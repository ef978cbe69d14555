"""The search: shapes x measured removal under a MAC budget, each candidate scored the same way.

For every shape (a width multiplier for all stages, separable convolutions or not) :func:`search` removes units by
measured value until the budget holds (:func:`~distill.search.space.greedy_removal`), scores each distinct
feasible candidate (:class:`~distill.search.trained.ShortKD` on digits: a short KD run, then FID vs the teacher
reference) and returns them all (the quality/MAC frontier) with the best. Unit values come from the robust-trained
full-width network; on narrower shapes they are an estimate of the order to remove in, the score is measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from distill.search.space import Candidate, candidate_macs, greedy_removal

DEFAULT_WIDTHS = (1.0, 0.75, 0.5, 0.375, 0.25)


@dataclass
class Entry:
    candidate: Candidate
    macs: float
    #: the sum of the removed units' measured quality changes
    predicted_delta: float
    score: float
    #: measured batch-1 latency (ms), under a latency budget
    latency_ms: float | None = None


@dataclass
class SearchResult:
    budget_macs: float | None
    teacher_macs: float
    scorer: str
    entries: list[Entry] = field(default_factory=list)
    budget_latency_ms: float | None = None

    @property
    def best(self) -> Entry:
        return min(self.entries, key=lambda e: e.score)

    def cost(self, entry: Entry) -> float:
        """What the budget counts: the entry's MACs, or its latency under a latency budget."""
        return entry.latency_ms if self.budget_latency_ms is not None else entry.macs

    def frontier(self) -> list[Entry]:
        """The entries no other beats on both cost (MACs, or latency under a latency budget) and score."""
        ordered = sorted(self.entries, key=lambda e: (self.cost(e), e.score))
        front: list[Entry] = []
        for entry in ordered:
            if not front or entry.score < front[-1].score:
                front.append(entry)
        return front

    def to_dict(self) -> dict[str, Any]:
        def row(entry: Entry) -> dict[str, Any]:
            return {
                **asdict(entry),
                "candidate": asdict(entry.candidate),
                "macs_ratio": entry.macs / self.teacher_macs,
            }

        return {
            "budget_macs": self.budget_macs,
            "budget_latency_ms": self.budget_latency_ms,
            "teacher_macs": self.teacher_macs,
            "scorer": self.scorer,
            "entries": [row(e) for e in self.entries],
            "best": row(self.best),
            "frontier": [row(e) for e in self.frontier()],
        }


def search(
    teacher: Any,
    report: Any,
    *,
    budget_macs: float | None = None,
    budget_latency_ms: float | None = None,
    scorer: Callable[[Candidate], float],
    widths: Sequence[float] = DEFAULT_WIDTHS,
    separable: Sequence[bool] = (False, True),
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """Every shape's greedy candidate under ``budget_macs`` (MACs per batch-1 forward) or ``budget_latency_ms``
    (measured batch-1 latency on this machine; run with the cores idle), scored by ``scorer``.

    ``teacher`` is what :func:`students.pruned.pruned_unet` derives from (a UNet, its config, a folder);
    ``report`` the :class:`~distill.search.importance.ImportanceReport` of the robust-trained network."""
    budget = budget_latency_ms if budget_latency_ms is not None else budget_macs
    if (budget_macs is None) == (budget_latency_ms is None) or budget <= 0:
        raise ValueError(
            f"search takes one budget > 0, budget_macs or budget_latency_ms; got {budget_macs}, {budget_latency_ms}"
        )
    full = candidate_macs(teacher, Candidate())
    result = SearchResult(
        budget_macs=budget_macs,
        budget_latency_ms=budget_latency_ms,
        teacher_macs=full,
        scorer=getattr(scorer, "name", ""),
    )
    seen: set[Candidate] = set()
    for width in widths:
        if not 0 < width <= 1:
            raise ValueError(f"widths must be in (0, 1], got {width}")
        for sep in separable:
            greedy = greedy_removal(
                teacher,
                report,
                budget_macs=budget_macs,
                budget_latency_ms=budget_latency_ms,
                width=width,
                separable=sep,
            )
            if greedy.candidate is None or greedy.candidate in seen:
                continue
            seen.add(greedy.candidate)
            score = float(scorer(greedy.candidate))
            entry = Entry(greedy.candidate, greedy.macs, greedy.predicted_delta, score, greedy.latency_ms)
            result.entries.append(entry)
            if log is not None:
                latency = f", {entry.latency_ms:.2f} ms" if entry.latency_ms is not None else ""
                log(
                    f"width {width} separable {sep}: {len(entry.candidate.removed_units)} units removed, "
                    f"{entry.macs / full:.3f}x MACs{latency}, score {score:.4f}"
                )
    if not result.entries:
        what = (
            f"{budget_latency_ms:.2f} ms per forward"
            if budget_latency_ms is not None
            else f"{budget_macs / full:.3f}x of the teacher's MACs"
        )
        raise ValueError(
            f"no candidate reaches {what} in this search space (widths {list(widths)}, separable "
            f"{list(separable)}); allow narrower widths or a larger budget"
        )
    return result
