"""The search: shapes x measured removal under a MAC budget, each candidate scored the same way.

For every shape (a width multiplier for all stages, separable convolutions or not) :func:`search` removes units by
measured value until the budget holds (:func:`~distill.search.space.greedy_removal`), scores each distinct
feasible candidate (:class:`~distill.search.trained.ShortKD` on digits: a short KD run, then FID vs the teacher
reference) and returns them all (the quality/MAC frontier) with the best. Unit values come from the robust-trained
full-width network; on narrower shapes they are an estimate of the order to remove in, the score is measured.

A short run ranks far-apart candidates well and near ones by noise, so the best few (``finalists``) are scored
again by a costlier ``refine`` scorer (longer training, several seeds: successive halving) and the best is chosen
among them by that score.
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
    #: the ``refine`` scorer's score, for the finalists
    refined_score: float | None = None


@dataclass
class SearchResult:
    budget_macs: float | None
    teacher_macs: float
    scorer: str
    entries: list[Entry] = field(default_factory=list)
    budget_latency_ms: float | None = None
    #: the scorer of the finalists ("" when none were refined)
    refine_scorer: str = ""

    @property
    def best(self) -> Entry:
        """The finalist with the lowest refined score; the lowest score where nothing was refined."""
        refined = [e for e in self.entries if e.refined_score is not None]
        if refined:
            return min(refined, key=lambda e: e.refined_score)
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
            "refine_scorer": self.refine_scorer,
            "entries": [row(e) for e in self.entries],
            "best": row(self.best),
            "frontier": [row(e) for e in self.frontier()],
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> SearchResult:
        """A result written by :meth:`to_dict` (``best`` and ``frontier`` are derived again)."""

        def entry(row: dict[str, Any]) -> Entry:
            c = row["candidate"]
            candidate = Candidate(tuple(c["removed_units"]), float(c["width"]), bool(c["separable"]))
            return Entry(
                candidate,
                float(row["macs"]),
                float(row["predicted_delta"]),
                float(row["score"]),
                row.get("latency_ms"),
                row.get("refined_score"),
            )

        return cls(
            budget_macs=record["budget_macs"],
            teacher_macs=float(record["teacher_macs"]),
            scorer=record.get("scorer", ""),
            entries=[entry(row) for row in record["entries"]],
            budget_latency_ms=record.get("budget_latency_ms"),
            refine_scorer=record.get("refine_scorer", ""),
        )


def refine_finalists(
    result: SearchResult,
    refine: Callable[[Candidate], float],
    *,
    finalists: int = 3,
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """Score the ``finalists`` best entries (by their first score) again with ``refine``; the result's
    :attr:`~SearchResult.best` is then the finalist ``refine`` scores lowest. Entries already refined keep their
    score (a rerun continues)."""
    if finalists < 1:
        raise ValueError(f"finalists must be >= 1, got {finalists}")
    result.refine_scorer = getattr(refine, "name", "")
    for entry in sorted(result.entries, key=lambda e: e.score)[:finalists]:
        if entry.refined_score is None:
            entry.refined_score = float(refine(entry.candidate))
        if log is not None:
            c = entry.candidate
            log(
                f"finalist width {c.width} separable {c.separable}, {len(c.removed_units)} units removed: "
                f"score {entry.score:.4f}, refined {entry.refined_score:.4f}"
            )
    return result


def search(
    teacher: Any,
    report: Any,
    *,
    budget_macs: float | None = None,
    budget_latency_ms: float | None = None,
    scorer: Callable[[Candidate], float],
    widths: Sequence[float] = DEFAULT_WIDTHS,
    separable: Sequence[bool] = (False, True),
    refine: Callable[[Candidate], float] | None = None,
    finalists: int = 3,
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """Every shape's greedy candidate under ``budget_macs`` (MACs per batch-1 forward) or ``budget_latency_ms``
    (measured batch-1 latency on this machine; run with the cores idle), scored by ``scorer``.

    ``teacher`` is what :func:`students.pruned.pruned_unet` derives from (a UNet, its config, a folder);
    ``report`` the :class:`~distill.search.importance.ImportanceReport` of the robust-trained network; with
    ``refine``, the best ``finalists`` are scored again by it (:func:`refine_finalists`)."""
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
    if refine is not None:
        refine_finalists(result, refine, finalists=finalists, log=log)
    return result
