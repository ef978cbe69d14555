"""distill-diffusion: the training side (methods, data, metrics, FLOPs, export, CLI).

Top-level names load lazily so ``import teachers.schedule`` and ``import teachers.sampling`` stay free of
lightning; importing a method pulls in the trainer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "ConsistencyDistillation",
    "DiffusionTraining",
    "DigitsDataModule",
    "DistillationModule",
    "DistributionMatchingDistillation",
    "FlowSchedule",
    "KnowledgeDistillation",
    "NoiseSchedule",
    "Prediction",
    "ProgressiveDistillation",
    "TrajectoryDistillation",
]

if TYPE_CHECKING:
    from distill.data import DigitsDataModule
    from distill.methods.base import DistillationModule
    from distill.methods.consistency import ConsistencyDistillation
    from distill.methods.distribution_matching import DistributionMatchingDistillation
    from distill.methods.knowledge import KnowledgeDistillation
    from distill.methods.progressive import ProgressiveDistillation
    from distill.methods.training import DiffusionTraining
    from distill.methods.trajectory import TrajectoryDistillation
    from teachers.flow import FlowSchedule
    from teachers.parameterization import Prediction
    from teachers.schedule import NoiseSchedule

_LAZY = {
    "ConsistencyDistillation": "distill.methods.consistency",
    "DiffusionTraining": "distill.methods.training",
    "DistillationModule": "distill.methods.base",
    "DistributionMatchingDistillation": "distill.methods.distribution_matching",
    "KnowledgeDistillation": "distill.methods.knowledge",
    "ProgressiveDistillation": "distill.methods.progressive",
    "TrajectoryDistillation": "distill.methods.trajectory",
    "DigitsDataModule": "distill.data",
    "NoiseSchedule": "teachers.schedule",
    "FlowSchedule": "teachers.flow",
    "Prediction": "teachers.parameterization",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
