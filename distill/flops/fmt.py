"""Number formatting shared by the per-module MAC table and the reports: 1234567 -> '1.23M'."""

from __future__ import annotations


def fmt_count(n: float) -> str:
    """1234567 -> '1.23M' (K, M, G, T)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}" if isinstance(n, float) else str(n)
