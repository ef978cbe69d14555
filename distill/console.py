"""What the ``distill`` command and ``make demo`` print: dependencies' hints and deprecation warnings silenced,
and whether progress should draw a bar (a terminal) or print plain lines (a file, a pipe, CI, a cluster job).

:func:`quiet_third_party` runs first in the entry points (:func:`distill.cli.main`, :func:`distill.demo.main`,
``distill sample``). It drops, by default:

- diffusers' hint that ``accelerate`` is not installed (printed on every model load);
- Lightning's "💡 Tip: ..." adverts for litlogger and litmodels;
- ``FutureWarning`` and ``DeprecationWarning`` raised from other packages' code (torch, Lightning, fvcore,
  diffusers, ...): they concern those packages' own use of their dependencies, not the user's config;
- a few known warnings that say nothing actionable (torchmetrics' KID buffer notice).

Warnings attributed to ``distill``, ``teachers`` or ``students``, every other warning category, and every error
are left alone. ``DISTILL_VERBOSE=1`` (or Python's own ``-W`` / ``PYTHONWARNINGS`` options, for the warnings)
keeps everything.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

__all__ = ["NOISE", "format_duration", "interactive", "quiet_third_party", "verbose"]

# Substrings of the log records dropped (diffusers' and Lightning's loggers).
NOISE = (
    "`accelerate` was not found in the environment",  # diffusers, at every from_pretrained without accelerate
    "💡 Tip:",  # Lightning's litlogger / litmodels adverts
    "Unable to import `torchao` Tensor objects",  # diffusers, when torchao (the deploy extra) is newer than it knows
    "is an Enum subclass and is now natively supported by torch.compile",  # torch, as torchao registers its enums
)

# Warnings raised from any module but ours (and a script run as __main__) are the dependencies'.
OURS = r"(?!(distill|teachers|students|__main__)(\.|$))"

# Known third-party warnings (regex on the start of the message) that carry no action for the user.
QUIET_MESSAGES = (
    r"Metric `Kernel Inception Distance` will save all extracted features",  # torchmetrics, at every KID
)


def verbose() -> bool:
    """``DISTILL_VERBOSE`` set to anything but empty, 0, false or no."""
    return os.environ.get("DISTILL_VERBOSE", "").strip().lower() not in ("", "0", "false", "no")


def interactive(stream=None) -> bool:
    """Whether ``stream`` (default: stdout) is a terminal, where progress bars can redraw in place."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def format_duration(seconds: float) -> str:
    """``"1:59"`` (minutes:seconds) or ``"2:03:04"`` (hours:minutes:seconds)."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: let its handler report it
            return True
        return not any(text in message for text in NOISE)


_FILTER = _DropNoise()


def _loggers() -> list[logging.Logger]:
    """The loggers the noise is emitted on, and the library loggers whose handlers print it."""
    names = [
        "torch.utils._pytree",
        "diffusers",
        "diffusers.models.modeling_utils",
        "diffusers.pipelines.pipeline_utils",
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
    ]
    return [logging.getLogger(name) for name in names]


def quiet_third_party(*, force: bool = False) -> bool:
    """Silence the dependencies' noise (see the module docstring); a no-op under ``DISTILL_VERBOSE=1`` unless
    ``force``. Idempotent. Returns whether anything was silenced."""
    if verbose() and not force:
        return False
    try:  # diffusers' own handler, so records of its child loggers are filtered where they are printed
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.get_logger("diffusers")
    except ImportError:  # pragma: no cover - diffusers is a core dependency
        pass
    for logger in _loggers():
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)  # records created on this logger
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)  # records propagated from its children
    if not sys.warnoptions:  # -W / PYTHONWARNINGS given: the user chose the filters
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=OURS)
        for message in QUIET_MESSAGES:
            warnings.filterwarnings("ignore", message=message)
    return True
