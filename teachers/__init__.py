"""Frozen teacher adapters over diffusers models and their noise schedules (no lightning import)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["BUILTIN_TEACHERS", "DiffusionTeacher", "Prediction", "call_denoiser", "teacher_fingerprint"]

if TYPE_CHECKING:
    from teachers.network import call_denoiser
    from teachers.parameterization import Prediction
    from teachers.provenance import teacher_fingerprint
    from teachers.teacher import BUILTIN_TEACHERS, DiffusionTeacher

_LAZY = {
    "DiffusionTeacher": "teachers.teacher",
    "BUILTIN_TEACHERS": "teachers.teacher",
    "call_denoiser": "teachers.network",
    "Prediction": "teachers.parameterization",
    "teacher_fingerprint": "teachers.provenance",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'teachers' has no attribute {name!r}")
