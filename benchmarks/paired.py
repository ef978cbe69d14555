"""Paired ratios: every ratio a benchmark reports is the median of per-repeat ratios (the two sides timed in
turns, so drift cancels), reported with the interquartile range of those ratios."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def quartiles(values: Iterable[float]) -> list[float]:
    """``[q1, q3]`` of ``values`` (inclusive method, so two values give their own range)."""
    values = list(values)
    if len(values) < 2:
        return [values[0], values[0]] if values else []
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return [q1, q3]


def paired_ratio(numerators: Iterable[float], denominators: Iterable[float]) -> tuple[float, list[float]]:
    """The median of ``a / b`` over paired repeats and its ``[q1, q3]``."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    return statistics.median(ratios), quartiles(ratios)
