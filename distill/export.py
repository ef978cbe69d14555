"""Export a trained student as a diffusers-format folder with a model card (``distill export``).

The folder holds ``unet/`` (safetensors, EMA weights by default), ``scheduler/`` (the one the method's student
samples with: the teacher's for KD, a trailing DDIMScheduler for progressive, an LCMScheduler for consistency)
and ``README.md``. An existing folder is never touched unless ``overwrite``; the new one is written beside it
and moved into place only when complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

WEIGHTS = ("ema", "raw")


def load_checkpoint(module: torch.nn.Module, ckpt_path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint's weights into ``module`` (tensors only: ``weights_only=True``), through the
    method's own checks (the frozen teacher is never in a checkpoint); returns the checkpoint."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unreadable, truncated, or carrying pickled code: refuse, say why
        raise ValueError(
            f"ckpt_path {path} cannot be read as a checkpoint of tensors ({type(err).__name__}: {err}); pass a "
            "checkpoint written by `distill fit`"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"ckpt_path {path} is not a Lightning checkpoint (no state_dict)")
    if hasattr(module, "on_load_checkpoint"):
        module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    return checkpoint


def _student_and_schedule(module) -> tuple[torch.nn.Module, Any]:
    student = module.eval_student() if hasattr(module, "eval_student") else getattr(module, "student", None)
    if student is None:
        raise TypeError(f"{type(module).__name__} has no student to export")
    schedule = module.export_schedule()
    return student, schedule


def model_card(module, checkpoint: dict[str, Any], *, weights: str, metrics: dict | None = None) -> str:
    """README.md for the export: what it is, how to sample it, what it costs, what it scored."""
    from distill.flops import count_macs, example_inputs

    student, schedule = _student_and_schedule(module)
    teacher_net = module.teacher.unet
    s_macs = count_macs(student, example_inputs(student))
    t_macs = count_macs(teacher_net, example_inputs(teacher_net))
    consistency = schedule.scheduler_class == "LCMScheduler"
    steps = "1-4 (multistep consistency sampling)" if consistency else "as trained (DDIM, trailing spacing)"
    guidance = (
        "the guidance scale goes in as `timestep_cond` (scale - 1), one forward per step"
        if getattr(getattr(student, "config", None), "time_cond_proj_dim", None)
        else "classifier-free guidance runs the conditional and null-class branches"
    )
    lines = [
        f"# {type(student).__name__} distilled by {type(module).__name__}",
        "",
        f"- teacher: `{checkpoint.get('teacher_source') or module.teacher.source}`",
        f"- method: `{type(module).__module__}.{type(module).__name__}`, trained {checkpoint.get('global_step')} steps",
        f"- weights: {'EMA' if weights == 'ema' else 'raw (non-EMA)'}",
        f"- scheduler: `{schedule.scheduler_class}`; steps: {steps}; {guidance}",
        f"- parameters: {s_macs.parameters:,} (teacher {t_macs.parameters:,}, "
        f"{s_macs.parameters / t_macs.parameters:.2f}x)",
        f"- MACs per forward (batch 1): {s_macs.total / 1e6:.1f}M (teacher {t_macs.total / 1e6:.1f}M, "
        f"{s_macs.total / t_macs.total:.2f}x)",
        "",
        "Load and sample without remote code:",
        "",
        "```python",
        "from distill.pipelines import ClassConditionalPipeline",
        "",
        'pipe = ClassConditionalPipeline.from_pretrained("THIS_FOLDER")',
        "images = pipe(class_labels=[0, 1, 2], seed=0).images  # (N, C, H, W) in [0, 1]",
        "```",
    ]
    if metrics:
        from distill.metrics import format_table

        lines += [
            "",
            "## Measured (the evaluation protocol)",
            "",
            format_table(metrics["rows"], metrics.get("noise_floor")),
        ]
    return "\n".join(lines) + "\n"


def export_module(
    module,
    *,
    ckpt_path: str | Path,
    output: str | Path,
    weights: str = "ema",
    overwrite: bool = False,
    metrics: str | Path | None = None,
) -> Path:
    """Write ``output`` from ``module`` (built from the run's config) and the checkpoint's weights."""
    output = Path(output)
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise FileExistsError(
            f"output {output} already exists; choose another folder or pass --overwrite true"
        )
    if weights == "ema" and getattr(module, "ema", None) is None:
        raise ValueError("this run kept no EMA weights: export with --weights raw")
    metrics_data = json.loads(Path(metrics).read_text()) if metrics is not None else None
    checkpoint = load_checkpoint(module, ckpt_path)
    module.eval()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        module.save_pretrained(staging, use_ema=weights == "ema")  # unet/ + the method's scheduler/
        (staging / "README.md").write_text(
            model_card(module, checkpoint, weights=weights, metrics=metrics_data)
        )
        if output.exists():
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output
