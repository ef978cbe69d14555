"""Load a trained student from a diffusers-format folder, e.g. to start one method from another's result.

A student distilled by KD makes a far better starting point for step distillation than random weights (LCM and
progressive distillation both start from a trained diffusion model). ``load_student`` reads such a folder (an
export of ``distill export``, a model folder, or ``builtin:NAME`` for the students shipped with this package) and
can add LCM's guidance embedding (``time_cond_proj_dim``) with a zero-initialised projection, so the loaded
network computes exactly what it computed before until training moves it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from students.common import (
    builtin_folder,
    builtin_name,
    check_finite_weights,
    list_builtins,
    package_dir,
    read_json,
)
from students.provenance import read_teacher_record

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def builtin_students_dir() -> Path:
    """The folder holding the students shipped with this package (``students/weights/``)."""
    return package_dir("students") / "weights"


def list_builtin_students() -> list[str]:
    """Names accepted as ``builtin:NAME`` by :func:`load_student`."""
    return list_builtins("student")


def resolve_student_dir(path: str | Path) -> Path:
    """The network folder (the one holding ``config.json``) of an export, pipeline or model folder."""
    text = str(path)
    name = builtin_name(text)
    if name is None:
        root = Path(path).expanduser()
    elif name not in list_builtins("student") and name in list_builtins("teacher"):
        root = builtin_folder(name, kind="teacher")  # a shipped teacher's network as a starting point
    else:
        root = builtin_folder(name, kind="student")
    for candidate in (root / "unet", root / "transformer", root):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"student path {text!r}: no model config found (looked for {root / 'unet' / 'config.json'}, "
        f"{root / 'transformer' / 'config.json'} and {root / 'config.json'}). Pass a folder written by `distill export` or by model.save_pretrained(...)."
    )


def _model_class(class_name: str | None, where: Path) -> type[nn.Module]:
    from students import loadable_classes

    allowed = loadable_classes()
    if class_name not in allowed:
        raise ValueError(
            f"model at {where} is a {class_name!r}; loadable classes are {sorted(allowed)} (the folder never names "
            "code to import)"
        )
    return allowed[class_name]


def load_student(path: str | Path, time_cond_proj_dim: int | None = None) -> nn.Module:
    """Load a student network (weights only, safetensors) from ``path``.

    Args:
        path: an export folder (``unet/`` inside), a model folder (``config.json`` + safetensors), or
            ``builtin:NAME`` for a student shipped with this package (see :func:`list_builtin_students`).
        time_cond_proj_dim: give the network LCM's guidance-scale embedding of this size (``timestep_cond``).
            Added to a network without one as a zero-initialised projection, so outputs are unchanged at load;
            a network that already has one must have this size.

    When the folder has a scheduler config (an export does), the network gets ``trained_prediction_type`` (what
    its outputs mean); the distillation methods refuse a teacher that predicts something else. When it records its
    teacher (``unet/distilled_from.json``, written by ``distill export``), the network gets ``distilled_from``;
    the methods warn when their teacher is another one (``check_student_teacher``).
    """
    unet_dir = resolve_student_dir(path)
    config = read_json(unet_dir / "config.json", what="the student network's diffusers config")
    model_class = _model_class(config.get("_class_name"), unet_dir)
    weights_file = unet_dir / WEIGHTS_NAME
    if not weights_file.is_file():
        raise FileNotFoundError(
            f"no weights at {weights_file} (expected safetensors written by save_pretrained)"
        )
    existing = config.get("time_cond_proj_dim")
    adding = time_cond_proj_dim is not None and existing is None
    if time_cond_proj_dim is not None and existing is not None and existing != time_cond_proj_dim:
        raise ValueError(
            f"time_cond_proj_dim={time_cond_proj_dim}, but the student at {unet_dir} already embeds guidance with "
            f"time_cond_proj_dim={existing}; leave it unset or pass {existing}"
        )
    if adding:
        if "time_cond_proj_dim" not in config:
            raise ValueError(
                f"time_cond_proj_dim: the {config.get('_class_name')} at {unet_dir} has no timestep_cond input; "
                "only UNet2DConditionModel-style students can add LCM's guidance embedding"
            )
        config["time_cond_proj_dim"] = time_cond_proj_dim
    model = model_class.from_config(config)
    state = load_file(str(weights_file))
    check_finite_weights(state.items(), source=weights_file)
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed_missing = {"time_embedding.cond_proj.weight"} if adding else set()
    if unexpected or set(missing) - allowed_missing:
        raise ValueError(
            f"weights at {weights_file} do not match the config beside them: missing "
            f"{sorted(set(missing) - allowed_missing)}, unexpected {sorted(unexpected)}"
        )
    if adding:
        with torch.no_grad():
            model.time_embedding.cond_proj.weight.zero_()
    model.distilled_from = read_teacher_record(unet_dir)  # checked against a run's teacher by the methods
    model.student_source = str(path)
    for scheduler_file in (
        unet_dir / "scheduler_config.json",
        unet_dir.parent / "scheduler" / "scheduler_config.json",
    ):
        if (
            scheduler_file.is_file()
        ):  # what the weights were trained to predict, checked against the teacher's
            scheduler = read_json(scheduler_file, what="a diffusers scheduler config")
            model.trained_prediction_type = trained_prediction(scheduler)
            model.trained_prediction_source = str(scheduler_file)
            break
    return model


def trained_prediction(scheduler_config: dict) -> str:
    """What a network saved beside ``scheduler_config`` was trained to predict: ``flow_prediction`` (the
    velocity) for a flow-matching scheduler (FlowMatch* classes or ``use_flow_sigmas``), else the config's
    ``prediction_type`` (diffusers' default ``epsilon``)."""
    name = str(scheduler_config.get("_class_name", ""))
    if name.startswith("FlowMatch") or scheduler_config.get("use_flow_sigmas"):
        return "flow_prediction"
    return str(scheduler_config.get("prediction_type", "epsilon"))
