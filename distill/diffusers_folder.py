"""Writing a trained student as a diffusers folder: ``unet/`` + ``scheduler/`` + ``model_index.json`` (+ the
teacher's VAE and text encoders for latent teachers), the layout ``DiffusionTeacher.from_pretrained`` and
diffusers' pipelines load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from students.common import denoiser_folder
from teachers.provenance import teacher_record, write_teacher_record

if TYPE_CHECKING:
    from teachers.teacher import DiffusionTeacher

#: the ``_class_name`` of a pixel-space export's ``model_index.json``: the library's own pipeline
PIXEL_PIPELINE = "ClassConditionalPipeline"


def save_student_folder(directory: str | Path, *, student: nn.Module, schedule, teacher) -> None:
    """Write ``student`` as ``unet/`` with ``schedule`` as ``scheduler/`` and ``model_index.json``; for a latent
    teacher also its VAE, text encoder(s) and tokenizer(s) (a whole pipeline folder). A teacher loaded from a
    folder is recorded in ``unet/distilled_from.json`` (:mod:`teachers.provenance`)."""
    directory = Path(directory)
    if not hasattr(student, "save_pretrained"):
        raise TypeError(f"{type(student).__name__} has no save_pretrained(); only diffusers students export")
    folder = directory / denoiser_folder(type(student).__name__)  # transformer/ for SD3 and FLUX students
    student.save_pretrained(folder)
    # which teacher these weights were distilled from (checked when a run starts from them)
    record = teacher_record(teacher)
    if record is not None:
        write_teacher_record(folder, record)
    schedule.save_pretrained(directory / "scheduler")
    if teacher.is_latent:
        teacher.save_latent_parts(directory)
    write_model_index(directory, student=student, scheduler_class=schedule.scheduler_class, teacher=teacher)


def component_library(model: nn.Module) -> str:
    """The library ``model_index.json`` names for ``model``: ``diffusers`` for diffusers' classes, ``students``
    for the classes this package defines (the package exposes them and the base classes diffusers' loader looks
    for), else the class's module."""
    from students import model_classes

    cls = type(model)
    if cls.__module__.startswith("diffusers"):
        return "diffusers"
    if model_classes().get(cls.__name__) is cls:
        return "students"
    return cls.__module__


def write_model_index(
    directory: Path, *, student: nn.Module, scheduler_class: str, teacher: DiffusionTeacher
) -> None:
    """``model_index.json`` so that diffusers loads a latent export as a whole pipeline: ``StableDiffusionPipeline``
    (``StableDiffusionXLPipeline`` for SDXL teachers) or, for consistency students (``LCMScheduler``),
    ``LatentConsistencyModelPipeline``. A student class of this package is named as ``["students", CLASS]``:
    diffusers loads it wherever distill-diffusion is installed and ``students`` imported.

    A pixel-space (class-conditional) export names ``ClassConditionalPipeline``, which diffusers does not have:
    ``DiffusionPipeline.from_pretrained`` fails naming it ("module diffusers has no attribute
    ClassConditionalPipeline") instead of guessing; ``distill.pipelines.ClassConditionalPipeline`` loads it."""
    library = component_library(student)
    if not teacher.is_latent:
        index = {
            "_class_name": PIXEL_PIPELINE,
            "unet": [library, type(student).__name__],
            "scheduler": ["diffusers", scheduler_class],
        }
        (Path(directory) / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        return
    family = getattr(teacher, "transformer_family", None)
    if family is not None:
        index = transformer_pipeline_index(student=student, scheduler_class=scheduler_class, teacher=teacher)
        (Path(directory) / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        return
    if teacher.schedule.family == "flow":
        raise ValueError(
            "exporting a student of a latent flow-matching teacher as a diffusers pipeline folder is not supported: "
            "its pipeline (SD3, FLUX) takes a transformer, not a UNet. Export the denoiser alone (--format unet) "
            "or distil a pixel-space flow teacher"
        )
    if teacher.is_sdxl:
        pipeline = "StableDiffusionXLPipeline"
    elif scheduler_class == "LCMScheduler":
        pipeline = "LatentConsistencyModelPipeline"
    else:
        pipeline = "StableDiffusionPipeline"
    index: dict[str, Any] = {
        "_class_name": pipeline,
        "unet": [library, type(student).__name__],
        "scheduler": ["diffusers", scheduler_class],
        "vae": ["diffusers", type(teacher.vae).__name__],
    }
    for i, (encoder, tokenizer) in enumerate(zip(teacher.text_encoders, teacher.tokenizers, strict=True)):
        suffix = "" if i == 0 else f"_{i + 1}"
        index[f"text_encoder{suffix}"] = ["transformers", type(encoder).__name__]
        index[f"tokenizer{suffix}"] = ["transformers", type(tokenizer).__name__]
    if not teacher.is_sdxl:
        index.update(
            {
                "safety_checker": [None, None],
                "feature_extractor": [None, None],
                "requires_safety_checker": False,
            }
        )
    (Path(directory) / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


# the pipeline classes of the transformer families, and the text components each takes (in order)
TRANSFORMER_PIPELINES = {
    "sd3": ("StableDiffusion3Pipeline", 3),
    "flux": ("FluxPipeline", 2),
}


def tokenizer_class_name(tokenizer: Any) -> str:
    """The name ``model_index.json`` gives a tokenizer: T5's as ``T5TokenizerFast`` (a tokenizer.json folder, which
    transformers 4 and 5 both load under that name)."""
    name = type(tokenizer).__name__
    return "T5TokenizerFast" if name == "T5Tokenizer" else name


def transformer_pipeline_index(*, student: nn.Module, scheduler_class: str, teacher) -> dict[str, Any]:
    """``model_index.json`` of an SD3 (``StableDiffusion3Pipeline``) or FLUX (``FluxPipeline``) export: the student
    as ``transformer``, the teacher's VAE, text encoders and tokenizers, unused slots (SD3 without T5, image
    encoders) as ``[null, null]``."""
    pipeline, slots = TRANSFORMER_PIPELINES[teacher.transformer_family]
    index: dict[str, Any] = {
        "_class_name": pipeline,
        "transformer": [component_library(student), type(student).__name__],
        "scheduler": ["diffusers", scheduler_class],
        "vae": ["diffusers", type(teacher.vae).__name__],
    }
    for i in range(slots):
        suffix = "" if i == 0 else f"_{i + 1}"
        if i < len(teacher.text_encoders):
            index[f"text_encoder{suffix}"] = ["transformers", type(teacher.text_encoders[i]).__name__]
            index[f"tokenizer{suffix}"] = ["transformers", tokenizer_class_name(teacher.tokenizers[i])]
        else:
            index[f"text_encoder{suffix}"] = [None, None]
            index[f"tokenizer{suffix}"] = [None, None]
    index.update({"image_encoder": [None, None], "feature_extractor": [None, None]})
    return index
