"""The frozen teacher: a diffusers denoiser plus the noise schedule it was trained with."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.parameterization import Prediction
from distill.schedule import NoiseSchedule
from students import DIFFUSERS_CLASSES
from teachers.network import denoise, num_class_embeds

# diffusers classes a teacher folder may name; loading never imports code from the folder itself.
SUPPORTED_CLASSES = DIFFUSERS_CLASSES
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
BUILTIN_PREFIX = "builtin:"
BUILTIN_TEACHERS = {"digits": Path(__file__).resolve().parent / "digits"}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or a torch.dtype, got {dtype!r}")
    return _DTYPES[dtype]


class DiffusionTeacher(nn.Module):
    """A frozen diffusion teacher answering ``predict(x_t, t, cond, guidance_scale)`` in x0, eps and v.

    Frozen at construction (``eval()``, ``requires_grad_(False)``) and optionally held in bf16/fp16; its math
    (conversions, guidance) runs in the input's dtype. Methods register it as ``self.teacher`` and keep it out
    of optimizers, DDP and checkpoints.

    Args:
        unet: a diffusers ``UNet2DModel`` / ``UNet2DConditionModel`` (or anything with that call signature).
        scheduler_config: the diffusers scheduler config it was trained with (``scheduler_config.json``).
        dtype: dtype the network is held and run in.
        null_class: the class label of the unconditional branch for class-conditional teachers
            (default: the last class embedding, as the digits teacher is trained).
    """

    def __init__(
        self,
        unet: nn.Module,
        scheduler_config: Mapping[str, Any],
        *,
        dtype: str | torch.dtype | None = None,
        null_class: int | None = None,
    ) -> None:
        super().__init__()
        target = resolve_dtype(dtype)
        current = next(unet.parameters()).dtype
        self.unet = unet if current == target else unet.to(target)
        self.schedule = NoiseSchedule.from_scheduler_config(scheduler_config)
        n_classes = num_class_embeds(unet)
        self.null_class = null_class if null_class is not None else (n_classes - 1 if n_classes else None)
        self.source: str | None = None
        self.requires_grad_(False)
        self.eval()

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        subfolder: str | None = None,
        dtype: str | torch.dtype | None = None,
        null_class: int | None = None,
    ) -> DiffusionTeacher:
        """Load from a diffusers pipeline folder (``unet/`` + ``scheduler/``) or a model folder.

        ``path`` is a local folder, ``builtin:digits`` for the teacher shipped with this package, or a Hugging
        Face id already in the local cache (never downloaded). A model folder needs its scheduler config beside
        it (``scheduler_config.json``) or in a sibling ``scheduler/`` folder.
        """
        root = _resolve_root(path)
        unet_dir, scheduler_file = _locate(root, subfolder)
        config = json.loads((unet_dir / "config.json").read_text())
        class_name = config.get("_class_name")
        # diffusers' UNets or an exported student of ours: a fixed list, nothing named by the folder is imported
        from students import loadable_classes, model_classes

        model_class = loadable_classes().get(class_name)
        if model_class is None:
            raise ValueError(
                f"model at {unet_dir} is a {class_name!r}; supported classes are {SUPPORTED_CLASSES} (diffusers) "
                f"and {sorted(model_classes())} (students)"
            )
        unet = model_class.from_pretrained(unet_dir)
        teacher = cls(unet, json.loads(scheduler_file.read_text()), dtype=dtype, null_class=null_class)
        teacher.source = str(path)
        return teacher

    def save_pretrained(self, directory: str | Path) -> None:
        """Write a pipeline-style folder: ``unet/`` (safetensors) and ``scheduler/scheduler_config.json``."""
        directory = Path(directory)
        self.unet.save_pretrained(directory / "unet")
        self.schedule.save_pretrained(directory / "scheduler")

    # -- properties ---------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def prediction_type(self) -> str:
        return self.schedule.prediction_type

    @property
    def num_classes(self) -> int | None:
        """Number of real classes (null class excluded) for class-conditional teachers."""
        n = num_class_embeds(self.unet)
        return None if n is None else n - 1

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def sample_size(self) -> int:
        size = self.unet.config.sample_size
        return int(size[0] if isinstance(size, list | tuple) else size)

    # -- the contract -------------------------------------------------------------------------------------
    def null_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """The unconditional counterpart of ``cond`` (the null class for class-conditional teachers)."""
        if cond is not None and not torch.is_floating_point(cond):
            if self.null_class is None:
                raise ValueError("this teacher has no class embeddings, so it has no null class for guidance")
            return torch.full_like(cond, self.null_class)
        raise ValueError(
            "guidance on encoder hidden states needs the unconditional embeddings: pass uncond=... to predict()"
        )

    @torch.no_grad()
    def predict(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        guidance_scale: float | torch.Tensor | None = None,
        *,
        uncond: torch.Tensor | None = None,
    ) -> Prediction:
        """Denoise ``x_t`` at integer timesteps ``t`` (B,) and return x0, eps and v, consistently.

        With ``guidance_scale`` w (a float or a per-sample (B,) tensor) other than None/1, the conditional and
        unconditional branches run in one batched forward and combine as ``uncond + w (cond - uncond)``.
        """
        null = None
        if guidance_scale is not None and cond is not None:
            null = uncond if uncond is not None else self.null_cond(cond)
        return denoise(self.unet, self.schedule, x_t, t, cond, guidance_scale=guidance_scale, uncond=null)

    def forward(self, *args: Any, **kwargs: Any) -> Prediction:
        return self.predict(*args, **kwargs)


def _resolve_root(path: str | Path) -> Path:
    text = str(path)
    if text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX) :]
        if name not in BUILTIN_TEACHERS:
            raise FileNotFoundError(
                f"unknown built-in teacher {text!r}; built-ins: "
                f"{[BUILTIN_PREFIX + k for k in BUILTIN_TEACHERS]}"
            )
        root = BUILTIN_TEACHERS[name]
        if not (root / "unet" / "config.json").is_file():
            raise FileNotFoundError(
                f"built-in teacher {text!r} is missing its files at {root}; reinstall the package"
            )
        return root
    root = Path(path).expanduser()
    if root.exists():
        return root
    if text.count("/") == 1 and not text.startswith((".", "/")):
        try:  # a Hugging Face id already in the user's cache; never downloads
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, local_files_only=True))
        except Exception:
            pass
    raise FileNotFoundError(
        f"teacher path {text!r} does not exist. Pass a local diffusers model or pipeline folder "
        f"(with unet/config.json and scheduler/scheduler_config.json), a Hugging Face id already in your local "
        f"cache, or {BUILTIN_PREFIX}digits for the shipped digits teacher."
    )


def _locate(root: Path, subfolder: str | None) -> tuple[Path, Path]:
    """Find the network folder and its scheduler config inside a model or pipeline folder."""
    if subfolder is not None:
        unet_dir = root / subfolder
    elif (root / "unet" / "config.json").is_file():
        unet_dir = root / "unet"
    else:
        unet_dir = root
    if not (unet_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"no diffusers model config at {unet_dir / 'config.json'}; point the teacher path at a model folder "
            f"or a pipeline folder with a unet/ subfolder (or pass subfolder=...)"
        )
    candidates = [
        unet_dir / "scheduler_config.json",
        root / "scheduler" / "scheduler_config.json",
        unet_dir.parent / "scheduler" / "scheduler_config.json",
        root / "scheduler_config.json",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return unet_dir, candidate
    raise FileNotFoundError(
        f"no scheduler config for the teacher at {unet_dir}: looked for "
        f"{[str(c) for c in candidates]}. Save the training scheduler with scheduler.save_pretrained(...)."
    )
