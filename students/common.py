"""What every student builder shares: reading a teacher's UNet config, and what a builder tells distillation."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

TeacherLike = nn.Module | Mapping[str, Any] | str | Path

# diffusers' transformer denoisers a pipeline folder holds as transformer/ (UNets are unet/)
TRANSFORMER_CLASSES = ("SD3Transformer2DModel", "FluxTransformer2DModel")
DENOISER_FOLDERS = ("unet", "transformer")


def denoiser_folder(class_name: str | None) -> str:
    """The pipeline component a denoiser class is saved as: ``transformer`` (SD3, FLUX) or ``unet``."""
    return "transformer" if class_name in TRANSFORMER_CLASSES else "unet"


# Keys diffusers writes into a saved config that are not constructor arguments.
_PRIVATE = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values")


def read_json(path: str | Path, *, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; a file that is not valid JSON, or holds something other than an object, raises
    ValueError naming the file and what it should hold (``what``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); it should be {what}. Restore the file, or write the folder again "
            "with save_pretrained(...) / distill export"
        ) from error
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} holds a JSON {type(data).__name__}, not an object; it should be {what}. Restore the file, or "
            "write the folder again with save_pretrained(...) / distill export"
        )
    return data


def check_finite_weights(named: Iterable[tuple[str, torch.Tensor]], *, source: str | Path) -> None:
    """Refuse weights holding NaN or inf (a corrupt file, or one saved from a diverged run), naming ``source``
    (the file) and the first bad tensors; sampling from them would only give blank images."""
    bad = [
        name
        for name, tensor in named
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        raise ValueError(
            f"weights at {source} contain NaN or inf values in {len(bad)} tensor(s) "
            f"({bad[:4]}{'...' if len(bad) > 4 else ''}); the file is corrupt or was saved from a diverged run. "
            "Load a file with finite weights (e.g. export an earlier checkpoint again)"
        )


def named_tensors(module: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    """A module's parameters and buffers with their names (what :func:`check_finite_weights` reads)."""
    yield from module.named_parameters()
    yield from module.named_buffers()


def weights_source(folder: Path) -> Path:
    """The weights file of a model folder, for messages (the folder itself when it holds none or several)."""
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    return files[0] if len(files) == 1 else folder


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (shipped weights live there)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the `{package}` package of distill-diffusion is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


BUILTIN_PREFIX = "builtin:"
# where each kind of shipped model lives: (package, folder inside it)
_BUILTIN_HOMES = {"teacher": ("teachers", "."), "student": ("students", "weights")}


def builtin_name(path: str | Path) -> str | None:
    """``NAME`` when ``path`` is ``builtin:NAME`` (a model shipped with this package), else None. The one place
    that parses the prefix (teachers, students and student configs all resolve it here)."""
    text = str(path)
    return text[len(BUILTIN_PREFIX) :] if text.startswith(BUILTIN_PREFIX) else None


def list_builtins(kind: str) -> list[str]:
    """Names of the shipped models of ``kind`` ("teacher" or "student"): folders with ``unet/config.json``."""
    package, folder = _BUILTIN_HOMES[kind]
    root = package_dir(package) / folder
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "unet" / "config.json").is_file())


def builtin_folder(name: str, *, kind: str) -> Path:
    """The folder of the shipped model ``builtin:NAME`` of ``kind``, found without importing its package."""
    package, folder = _BUILTIN_HOMES[kind]
    path = (package_dir(package) / folder / name).resolve()
    if name not in list_builtins(kind):
        raise FileNotFoundError(
            f"there is no built-in {kind} {BUILTIN_PREFIX + name!r} (looked in {path}); built-ins: "
            f"{[BUILTIN_PREFIX + n for n in list_builtins(kind)]}"
        )
    return path


def teacher_config(teacher: TeacherLike, *, keep_class: bool = False) -> dict[str, Any]:
    """The constructor config of a teacher's denoiser from a model, a config mapping, a folder (model folder,
    pipeline folder with ``unet/`` or ``transformer/``, or ``builtin:digits``) or a ``config.json`` file.
    ``keep_class``: keep ``_class_name`` (the denoiser's class; a loaded model's class name)."""
    if isinstance(teacher, nn.Module):
        unet = getattr(teacher, "unet", teacher)  # a teacher adapter holds its network as .unet
        config = getattr(unet, "config", None)
        if config is None:
            raise TypeError(f"teacher network {type(unet).__name__} has no diffusers .config to derive from")
        config = {**dict(config), "_class_name": type(unet).__name__}
    elif isinstance(teacher, Mapping):
        config = dict(teacher)
    else:
        text = str(teacher)
        name = builtin_name(text)
        path = builtin_folder(name, kind="teacher") if name is not None else Path(text).expanduser()
        if not path.exists() and text.count("/") == 1 and not text.startswith((".", "/", "~")):
            try:  # a Hugging Face id already in the user's cache; never downloads
                from huggingface_hub import snapshot_download

                path = Path(
                    snapshot_download(
                        text,
                        local_files_only=True,
                        allow_patterns=["unet/config.json", "transformer/config.json"],
                    )
                )
            except Exception:
                pass
        candidates = (
            [path]
            if path.suffix == ".json"
            else [path / "config.json", *(path / folder / "config.json" for folder in DENOISER_FOLDERS)]
        )
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(
                f"teacher {text!r}: no UNet config found (looked for {', '.join(map(str, candidates))}); pass a "
                "diffusers model folder, a pipeline folder with unet/ or transformer/, a config.json, or a loaded "
                "model"
            )
        config = read_json(found, what="a diffusers denoiser config (config.json)")
    private = tuple(k for k in _PRIVATE if not (keep_class and k == "_class_name"))
    return {k: v for k, v in config.items() if k not in private}


@dataclass(frozen=True)
class StudentInfo:
    """What a builder knows about its student's relation to the teacher.

    Attributes:
        init_mapping: student module prefix -> teacher module prefix for initialising from the teacher
            (longest prefix wins; names not mapped are copied by equal name where shapes match).
        feature_pairs: (teacher module, student module) names whose outputs feature KD compares.
        recipe: where the design comes from (paper, preset).
    """

    init_mapping: dict[str, str] = field(default_factory=dict)
    feature_pairs: list[tuple[str, str]] = field(default_factory=list)
    recipe: str = ""


def attach_info(model: nn.Module, info: StudentInfo) -> nn.Module:
    """Attach ``info`` as ``model.student_info`` (read by KnowledgeDistillation when its arguments are left
    unset). Not saved with the weights: rebuild with the builder to get it back."""
    object.__setattr__(model, "student_info", info)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
