"""Range checks of the methods' numeric options, run at construction (before any step): each error names the config
key (under ``model.init_args``), what was expected and how to fix it."""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence

PREFIX = "model.init_args."


def check_time_density(density: str, *, logit_mean: float, logit_std: float, prefix: str = PREFIX) -> None:
    """A training-time density of :data:`teachers.flow.TIME_DENSITIES` with a finite logit-normal mean and a
    standard deviation >= 0 (SD3's: 0 and 1)."""
    from teachers.flow import TIME_DENSITIES

    if density not in TIME_DENSITIES:
        raise ValueError(
            f"time_density must be one of {TIME_DENSITIES} (logit_normal: SD3's rectified-flow recipe), got "
            f"{density!r}: set {prefix}time_density"
        )
    check_finite({"logit_mean": logit_mean, "logit_std": logit_std}, prefix=prefix)
    check_at_least(logit_std, key="logit_std", minimum=0, prefix=prefix)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_finite(options: Mapping[str, float | None], *, prefix: str = PREFIX) -> None:
    """Every number in ``options`` (key -> value; None is skipped) is finite: NaN or inf would train or sample
    nothing useful without a word."""
    for key, value in options.items():
        if value is None:
            continue
        if not _is_number(value) or not math.isfinite(value):
            raise ValueError(
                f"{key} must be a finite number, got {value!r}: set {prefix}{key} to a real value"
            )


def check_probability(
    value: float | None, *, key: str, example: float, open_above: bool = False, prefix: str = PREFIX
) -> None:
    """``value`` (None: unset, allowed) is a probability or rate in [0, 1], or [0, 1) with ``open_above``."""
    if value is None:
        return
    upper = "1)" if open_above else "1]"
    inside = _is_number(value) and (0.0 <= value < 1.0 if open_above else 0.0 <= value <= 1.0)
    if not inside:
        raise ValueError(f"{key} must be in [0, {upper}, got {value!r}: set {prefix}{key} to e.g. {example}")


def check_at_least(value: float, *, key: str, minimum: float, prefix: str = PREFIX) -> None:
    """``value`` is a finite number >= ``minimum`` (counts of samples or rows, loss weights)."""
    if not _is_number(value) or not math.isfinite(value) or value < minimum:
        raise ValueError(f"{key} must be a finite number >= {minimum}, got {value!r}: set {prefix}{key}")


def _step_count(value: object, *, max_steps: int) -> int | None:
    """``value`` as a step count in ``[1, max_steps]``, or None when it is not one."""
    if isinstance(value, bool):
        return None
    try:
        count = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None
    return count if 1 <= count <= max_steps else None


def check_step_count(value: int, *, key: str, max_steps: int, prefix: str = PREFIX) -> int:
    """One sampling step count: a whole number in ``[1, max_steps]``."""
    count = _step_count(value, max_steps=max_steps)
    if count is None:
        raise ValueError(
            f"{key} must be a whole number of sampling steps in [1, {max_steps}] (the teacher's timesteps), got "
            f"{value!r}: set {prefix}{key} to e.g. 25"
        )
    return count


def check_step_counts(
    values: Sequence[int] | None, *, key: str, max_steps: int, prefix: str = PREFIX
) -> list[int] | None:
    """Sampling step counts: a non-empty list of whole numbers in ``[1, max_steps]`` (None: the default)."""
    if values is None:
        return None
    counts = [_step_count(value, max_steps=max_steps) for value in values]
    if not counts or None in counts:
        raise ValueError(
            f"{key} must be a non-empty list of whole numbers of sampling steps in [1, {max_steps}] (the teacher's "
            f"timesteps), got {list(values)!r}: set {prefix}{key} to e.g. [1, 2, 4], or null for the method's "
            "default"
        )
    return [int(c) for c in counts if c is not None]
