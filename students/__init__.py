"""Student architectures: importable from other repositories without the trainer (torch, diffusers, timm only).

import students
students.list_students("bk_*")
unet = students.create_student("bk_small", teacher="path/to/teacher/unet")

The model classes this package defines (``students.EfficientUNet2DConditionModel``, ``students.TimmUNet``) and
diffusers' ``ModelMixin`` are attributes of the package: an exported pipeline's ``model_index.json`` names its
student as ``["students", CLASS]``, and diffusers' ``DiffusionPipeline.from_pretrained`` looks both the class and
the base classes it knows how to load up on that module (``import students`` first).
"""

from typing import Any

from students.common import StudentInfo, count_parameters, teacher_config
from students.registry import (
    ENTRY_POINT_GROUP,
    create_student,
    get_student_builder,
    is_student,
    list_students,
    load_entry_points,
    register_student,
)


def model_classes() -> dict:
    """The model classes this package defines, by the ``_class_name`` their saved configs carry: what a loader
    may construct for a folder whose class is not a diffusers one (a fixed list; folders never name code)."""
    from students.efficient import EfficientUNet2DConditionModel
    from students.pruned import PrunedUNet2DConditionModel
    from students.timm_unet import TimmUNet

    return {
        cls.__name__: cls for cls in (EfficientUNet2DConditionModel, PrunedUNet2DConditionModel, TimmUNet)
    }


DIFFUSERS_CLASSES = ("UNet2DModel", "UNet2DConditionModel", "SD3Transformer2DModel", "FluxTransformer2DModel")
_MODEL_MODULES = {
    "EfficientUNet2DConditionModel": "students.efficient",
    "PrunedUNet2DConditionModel": "students.pruned",
    "TimmUNet": "students.timm_unet",
}


def __getattr__(name: str) -> Any:
    """The model classes (imported on first use) and ``ModelMixin``, the base class diffusers' pipeline loader
    checks a component's class against on the module ``model_index.json`` names."""
    import importlib

    if name in _MODEL_MODULES:
        return getattr(importlib.import_module(_MODEL_MODULES[name]), name)
    if name == "ModelMixin":
        from diffusers import ModelMixin

        return ModelMixin
    raise AttributeError(f"module 'students' has no attribute {name!r}")


def loadable_classes() -> dict:
    """Every class a saved folder may be loaded as, by ``_class_name``: diffusers' UNets and ours. Loaders look
    the folder's name up here; nothing the folder names is imported."""
    import diffusers

    return {**{name: getattr(diffusers, name) for name in DIFFUSERS_CLASSES}, **model_classes()}


__all__ = [
    "ENTRY_POINT_GROUP",
    "EfficientUNet2DConditionModel",
    "PrunedUNet2DConditionModel",
    "StudentInfo",
    "TimmUNet",
    "count_parameters",
    "create_student",
    "get_student_builder",
    "is_student",
    "list_students",
    "load_entry_points",
    "loadable_classes",
    "model_classes",
    "register_student",
    "teacher_config",
]
