"""Architecture search over a teacher's blocks (SnapFusion-style): robust training with random unit dropping
(:class:`UnitDropping`), each unit's measured importance and cost (:mod:`distill.search.importance`)."""

from distill.search.robust import UnitDropping

__all__ = ["UnitDropping"]
