"""A registry of student builders in timm's style: ``create_student(name, **kwargs)``, ``list_students(pattern)``.

A builder is any callable returning an ``nn.Module`` with the denoiser call signature. Builders register with
``@register_student``; other packages add theirs through the ``distill_diffusion.students`` entry-point group
(each entry point names a builder, or a module that registers builders when imported). The registry is a
convenience for people; configs name builders directly by ``class_path``.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.metadata
import types
from collections.abc import Callable
from typing import TypeVar

from torch import nn

ENTRY_POINT_GROUP = "distill_diffusion.students"

Builder = Callable[..., nn.Module]
F = TypeVar("F", bound=Builder)

_BUILDERS: dict[str, Builder] = {}
_entry_points_loaded = False


def register_student(fn: F | None = None, *, name: str | None = None) -> F | Callable[[F], F]:
    """Register ``fn`` under ``name`` (default: the function's name). Use bare or with ``name=``."""

    def decorate(builder: F) -> F:
        key = name or builder.__name__
        existing = _BUILDERS.get(key)
        if existing is not None and existing is not builder:
            raise ValueError(
                f"a student named {key!r} is already registered ({existing.__module__}.{existing.__qualname__}); "
                "pick another name"
            )
        _BUILDERS[key] = builder
        return builder

    return decorate(fn) if fn is not None else decorate


def load_entry_points(*, reload: bool = False) -> list[str]:
    """Import the builders other installed packages declare; returns the entry-point names loaded."""
    global _entry_points_loaded
    if _entry_points_loaded and not reload:
        return []
    _entry_points_loaded = True
    loaded = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as err:  # a broken plugin must not break the library; say which one
            raise ImportError(
                f"entry point {ep.name!r} = {ep.value!r} in group {ENTRY_POINT_GROUP!r} failed to load: {err}"
            ) from err
        if not isinstance(obj, types.ModuleType):
            if not callable(obj):
                raise TypeError(f"entry point {ep.name!r} = {ep.value!r} is neither a module nor a callable")
            if ep.name not in _BUILDERS:
                register_student(obj, name=ep.name)
        loaded.append(ep.name)
    return loaded


def _ensure_loaded() -> None:
    from students import bk, efficient, pruned, timm_unet, transformer  # noqa: F401  (builders shipped here register)

    load_entry_points()


def list_students(pattern: str = "*") -> list[str]:
    """Sorted names of registered students matching the shell-style ``pattern`` (``"bk_*"``)."""
    _ensure_loaded()
    return sorted(n for n in _BUILDERS if fnmatch.fnmatchcase(n, pattern))


def is_student(name: str) -> bool:
    _ensure_loaded()
    return name in _BUILDERS


def get_student_builder(name: str) -> Builder:
    _ensure_loaded()
    try:
        return _BUILDERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_BUILDERS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown student {name!r}{hint} (registered: {', '.join(sorted(_BUILDERS))})"
        ) from None


def create_student(name: str, **kwargs) -> nn.Module:
    """Build the registered student ``name`` (``create_student("bk_small", teacher="path/to/unet")``)."""
    return get_student_builder(name)(**kwargs)
