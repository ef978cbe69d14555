"""Export a trained student as a diffusers-format folder with a model card (``distill export``).

The folder holds ``unet/`` (``transformer/`` for SD3 and FLUX students; safetensors, EMA weights by default), ``scheduler/`` (the one the method's student
samples with: the teacher's for KD, a trailing DDIMScheduler for progressive, an LCMScheduler for consistency)
and ``README.md``; ``--format onnx`` adds ``onnx/model.onnx`` (dynamic batch, checked in onnxruntime) and, with
``int8``, ``onnx/model_int8.onnx`` with its FID/accuracy change on digits. An existing folder is never touched
unless ``overwrite``; the new one is written beside it and moved into place only when complete.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from students.common import denoiser_folder
from students.provenance import RECORD_NAME, read_teacher_record
from teachers.schedule import TRAINED_TIMESTEPS_KEY
from teachers.transformer import takes_guidance, transformer_family

WEIGHTS = ("ema", "raw")
FORMATS = ("diffusers", "onnx", "executorch")
QUANTIZE = ("int8", "int4w")


@contextlib.contextmanager
def staged_folder(output: Path) -> Iterator[Path]:
    """A staging folder beside ``output``, moved into its place when the block completes (an existing ``output``
    is replaced only then) and removed when the block raises: a folder is never left half written."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        yield staging
        if output.exists():
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def ptq_from_folder(directory: Path):
    """Post-training int8 of an export folder's network, calibrated on its own sampling trajectory."""
    from distill.quantization import calibration_inputs, quantize_ptq
    from teachers import DiffusionTeacher

    network = DiffusionTeacher.from_pretrained(directory).unet.float().eval()
    converted = quantize_ptq(network, calibration_inputs(directory))
    converted.origin = (
        "post-training quantization (calibrated on 64 images' sampling trajectories at 1, 2, 4 steps)"
    )
    return converted


def read_checkpoint(ckpt_path: str | Path, *, argument: str = "ckpt_path") -> dict[str, Any]:
    """A Lightning checkpoint read as tensors only (``weights_only=True``: one carrying pickled code is refused, not
    run), its weights checked finite; ``argument`` names the option in the errors."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"{argument} {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unreadable, truncated, or carrying pickled code: refuse, say why
        raise ValueError(
            f"{argument} {path} cannot be read as a checkpoint of tensors ({type(err).__name__}: {err}); pass a "
            "checkpoint written by `distill fit`"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{argument} {path} is not a Lightning checkpoint (no state_dict)")
    from students.common import check_finite_weights

    state = checkpoint["state_dict"]
    check_finite_weights(((k, v) for k, v in state.items() if isinstance(v, torch.Tensor)), source=path)
    return checkpoint


def load_checkpoint(module: torch.nn.Module, ckpt_path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint's weights into ``module`` (tensors only: ``weights_only=True``), through the
    method's own checks (the frozen teacher is never in a checkpoint); returns the checkpoint."""
    checkpoint = read_checkpoint(ckpt_path)
    if hasattr(module, "on_load_checkpoint"):
        module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    return checkpoint


def average_checkpoints(
    module,
    ckpt_path: str | Path,
    average: Sequence[str | Path],
    *,
    weights: str = "ema",
    loaded: dict[str, Any] | None = None,
) -> list[int]:
    """Set the weights ``module`` exports (its EMA copy, or the raw student with ``weights="raw"``) to their uniform
    mean over ``ckpt_path`` and the checkpoints in ``average`` (the same run's, as timm's ``avg_checkpoints`` and
    fairseq's ``average_checkpoints`` do); integer buffers keep ``ckpt_path``'s values. The module holds
    ``ckpt_path``'s weights already (:func:`load_checkpoint`). Returns the averaged checkpoints' global steps, in
    the order given. A checkpoint of another network (other names or shapes) or one named twice is refused.
    ``loaded``: ``ckpt_path``'s checkpoint as already read (:func:`load_checkpoint` returns it), not read again."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    paths = [Path(ckpt_path), *(Path(p) for p in average)]
    seen: dict[Path, Path] = {}
    for path in paths:
        if path.resolve() in seen:
            raise ValueError(
                f"average: checkpoint {path} is given twice (ckpt_path and average together name each checkpoint "
                "once; a repeated one would weigh double)"
            )
        seen[path.resolve()] = path
    if weights == "ema" and getattr(module, "ema", None) is None:
        raise ValueError("this run kept no EMA weights: average with --weights raw")
    target = module.ema.module if weights == "ema" else module.student
    prefix = "ema.module." if weights == "ema" else "student."
    mine = target.state_dict()
    sums = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in mine.items() if v.is_floating_point()}
    steps = []
    for index, path in enumerate(paths):
        if index == 0 and loaded is not None:
            checkpoint = loaded
        else:
            checkpoint = read_checkpoint(path, argument="ckpt_path" if index == 0 else "average")
        theirs = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        missing, extra = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
        shapes = [k for k in set(mine) & set(theirs) if theirs[k].shape != mine[k].shape]
        if missing or extra or shapes:
            raise ValueError(
                f"average: {path} does not hold this run's {'EMA ' if weights == 'ema' else ''}student "
                f"({len(missing)} tensors missing, e.g. {missing[:2]}; {len(extra)} unexpected, e.g. {extra[:2]}; "
                f"{len(shapes)} of another shape, e.g. {sorted(shapes)[:2]}): average checkpoints of one run"
            )
        for key, total in sums.items():
            total += theirs[key].to(torch.float64)
        steps.append(int(checkpoint.get("global_step", -1)))
    mean = {k: (sums[k] / len(paths)).to(v.dtype) if k in sums else v for k, v in mine.items()}
    target.load_state_dict(mean)
    return steps


def _student_and_schedule(module) -> tuple[torch.nn.Module, Any]:
    student = module.eval_student() if hasattr(module, "eval_student") else getattr(module, "student", None)
    if student is None:
        raise TypeError(f"{type(module).__name__} has no student to export")
    schedule = module.export_schedule()
    return student, schedule


def model_card(
    module,
    checkpoint: dict[str, Any],
    *,
    weights: str,
    metrics: dict | None = None,
    output_dir: Path | None = None,
    averaged_steps: Sequence[int] | None = None,
) -> str:
    """README.md for the export: what it is, how to sample it, what it costs, what it scored."""
    from distill.flops import count_macs, example_inputs
    from distill.quantization import QuantizedDenoiser, float_network

    student, schedule = _student_and_schedule(module)
    quantized = isinstance(student, QuantizedDenoiser)
    student = float_network(student)
    teacher_net = module.teacher.unet
    s_macs = count_macs(student, example_inputs(student))
    t_macs = count_macs(teacher_net, example_inputs(teacher_net))
    from teachers.sampling import resolve_sampler

    consistency = resolve_sampler(schedule) == "consistency"
    deterministic = (
        "as trained (Euler on the scheduler's shifted sigma grid)"
        if schedule.family == "flow"
        else "as trained (DDIM, trailing spacing)"
    )
    steps = "1-4 (multistep consistency sampling)" if consistency else deterministic
    trained_times = schedule.config.get(TRAINED_TIMESTEPS_KEY) if consistency else None
    if trained_times:
        steps = (
            f"{len(trained_times)} (multistep consistency sampling) at the timesteps it was trained at, "
            f"{list(trained_times)}, recorded in the scheduler config as `{TRAINED_TIMESTEPS_KEY}`: this package's "
            f"samplers use them; a diffusers pipeline takes them as `timesteps={list(trained_times)}`"
        )
    if takes_guidance(student):
        guidance = "the guidance scale goes in as the transformer's `guidance` input (FLUX-dev), one forward per step"
    elif transformer_family(student) == "flux":
        guidance = "no guidance input (guidance_scale has no effect)"
    elif getattr(getattr(student, "config", None), "time_cond_proj_dim", None):
        guidance = "the guidance scale goes in as `timestep_cond` (scale - 1), one forward per step"
    else:
        guidance = "classifier-free guidance runs the conditional and unconditional branches"
    folder = denoiser_folder(type(student).__name__)
    record = read_teacher_record(Path(output_dir) / folder) if output_dir else None
    recorded = (
        f" (denoiser weights sha256 `{record.sha256}`, recorded in `{folder}/{RECORD_NAME}`)"
        if record
        else ""
    )
    lines = [
        f"# {type(student).__name__} distilled by {type(module).__name__}",
        "",
        f"- teacher: `{checkpoint.get('teacher_source') or module.teacher.source}`" + recorded,
        f"- method: `{type(module).__module__}.{type(module).__name__}`, trained {checkpoint.get('global_step')} steps",
        f"- weights: {'EMA' if weights == 'ema' else 'raw (non-EMA)'}"
        + (
            f"; the uniform mean of {len(averaged_steps)} checkpoints' weights, at steps "
            f"{', '.join(map(str, averaged_steps))}"
            if averaged_steps
            else ""
        )
        + (
            "; trained for int8 (quantization-aware distillation): float weights in the denoiser folder, the int8 "
            "scales in `quantization/` (`distill.quantization.load_int8(THIS_FOLDER)` rebuilds the int8 graph)"
            if quantized
            else ""
        ),
        f"- scheduler: `{schedule.scheduler_class}`; steps: {steps}; {guidance}",
        f"- parameters: {s_macs.parameters:,} (teacher {t_macs.parameters:,}, "
        f"{s_macs.parameters / t_macs.parameters:.2f}x)",
        f"- MACs per forward (batch 1): {s_macs.total / 1e6:.1f}M (teacher {t_macs.total / 1e6:.1f}M, "
        f"{s_macs.total / t_macs.total:.2f}x)",
        "",
    ]
    if getattr(module.teacher, "is_latent", False):
        pipeline = (
            json.loads((Path(output_dir) / "model_index.json").read_text())["_class_name"]
            if output_dir
            else ""
        )
        call = (
            'images = pipe("a photo of a cat", num_inference_steps=4, guidance_scale=8.0).images'
            if consistency
            else 'images = pipe("a photo of a cat", num_inference_steps=25).images'
        )
        if trained_times:
            call = f'images = pipe("a photo of a cat", timesteps={list(trained_times)}, guidance_scale=1.0).images'
        family = getattr(module.teacher, "transformer_family", None)
        if family is not None:
            size = module.teacher.image_size
            scale = getattr(module, "eval_guidance_scale", 1.0)
            call = (
                f'images = pipe("a photo of a cat", num_inference_steps={4 if consistency else 25}, '
                f"guidance_scale={scale}, height={size}, width={size}, "
                f"max_sequence_length={module.teacher.max_sequence_length}).images"
            )
        custom = type(student).__module__.split(".")[0] != "diffusers"
        lines += [
            "A complete diffusers pipeline folder (the teacher's VAE and text encoder beside the student):",
            "",
            "```python",
            *(["import students  # the student's class (pip install distill-diffusion)"] if custom else []),
            f"from diffusers import {pipeline or 'DiffusionPipeline'}",
            "",
            f'pipe = {pipeline or "DiffusionPipeline"}.from_pretrained("THIS_FOLDER")',
            call,
            "```",
        ]
    else:
        lines += [
            "Load and sample without remote code (pip install distill-diffusion; diffusers' DiffusionPipeline does "
            "not load class-conditional pixel models):",
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
    format: str = "diffusers",
    int8: bool = False,
    onnx_opset: int = 18,
    int8_eval_samples: int = 1000,
    quantize: str | None = None,
    max_batch: int = 16,
    int4w_group_size: int = 32,
    average: Sequence[str | Path] = (),
) -> Path:
    """Write ``output`` from ``module`` (built from the run's config) and the checkpoint's weights.

    ``average`` names more checkpoints of the same run: the exported weights are then the uniform mean of theirs
    and ``ckpt_path``'s (:func:`average_checkpoints`; the model card lists the steps).

    ``quantize="int8"`` adds the static int8 graph (weights and activations) in the on-device format: from a
    quantization-aware run its trained scales, otherwise post-training quantization calibrated on the student's own
    sampling trajectory (:func:`distill.quantization.calibration_inputs`). ``quantize="int4w"`` (ExecuTorch only)
    adds a program with 4-bit weights in the linear layers (:mod:`distill.int4_weights`)."""
    output = Path(output)
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    check_runtime_options(format=format, int8=int8, quantize=quantize, max_batch=max_batch)
    if getattr(module, "quantized", False) and quantize != "int8" and format != "diffusers":
        raise ValueError(
            "this run trained the student for int8 (quantize: Int8QAT); pass --quantize int8 to export its int8 "
            "graph with the trained scales (the fp32 file is written beside it)"
        )
    if format in ("onnx", "executorch") and getattr(module.teacher, "transformer_family", None) is not None:
        raise ValueError(
            f"--format {format} exports UNet students; an SD3/FLUX transformer student exports as a diffusers "
            "pipeline folder (--format diffusers)"
        )
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise FileExistsError(
            f"output {output} already exists; choose another folder or pass --overwrite true"
        )
    if weights == "ema" and getattr(module, "ema", None) is None:
        raise ValueError("this run kept no EMA weights: export with --weights raw")
    metrics_data = json.loads(Path(metrics).read_text()) if metrics is not None else None
    checkpoint = load_checkpoint(module, ckpt_path)
    averaged = (
        average_checkpoints(module, ckpt_path, average, weights=weights, loaded=checkpoint)
        if average
        else None
    )
    module.eval()
    with staged_folder(output) as staging:
        module.save_pretrained(staging, use_ema=weights == "ema")  # unet/ + the method's scheduler/
        card = model_card(
            module,
            checkpoint,
            weights=weights,
            metrics=metrics_data,
            output_dir=staging,
            averaged_steps=averaged,
        )
        quantized = _int8_student(module, staging, weights=weights) if quantize == "int8" else None
        card += runtime_sections(
            staging,
            format=format,
            quantize=quantize,
            quantized=quantized,
            int8=int8,
            onnx_opset=onnx_opset,
            int8_eval_samples=int8_eval_samples,
            max_batch=max_batch,
            int4w_group_size=int4w_group_size,
        )
        (staging / "README.md").write_text(card)
    return output


def check_runtime_options(*, format: str, int8: bool, quantize: str | None, max_batch: int) -> None:
    """Refuse a format/quantization combination that cannot be written, before anything is (and check that the
    format's libraries are installed)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if int8 and format != "onnx":
        raise ValueError("int8 quantises the ONNX file: pass --format onnx with --int8 true")
    if quantize is not None and quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE} (or unset), got {quantize!r}")
    if quantize is not None and format == "diffusers":
        raise ValueError(
            f"--quantize {quantize} writes an on-device file: pass --format onnx (QDQ int8) or --format executorch"
        )
    if quantize == "int4w" and format != "executorch":
        raise ValueError(
            "--quantize int4w (4-bit linear weights, int8 dynamic activations) lowers to ExecuTorch only: pass "
            "--format executorch; an ONNX export takes --quantize int8 (static int8 QDQ)"
        )
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if format == "onnx":
        from distill.onnx_export import _require_onnx

        _require_onnx()
    if format == "executorch" or quantize is not None:
        from distill.quantization import require_deploy

        require_deploy()


def runtime_sections(
    directory: Path,
    *,
    format: str,
    quantize: str | None,
    quantized=None,
    int8: bool = False,
    onnx_opset: int = 18,
    int8_eval_samples: int = 1000,
    max_batch: int = 16,
    int4w_group_size: int = 32,
) -> str:
    """Write the on-device files of the export folder ``directory`` (``onnx/`` or ``executorch/``) and return
    their model-card sections; ``quantized`` is the int8 graph for ``quantize="int8"``."""
    if format == "onnx":
        return onnx_section(
            directory,
            opset=onnx_opset,
            int8=int8,
            int8_eval_samples=int8_eval_samples,
            quantized=quantized,
        )
    if format == "executorch":
        from distill.deploy import executorch_section

        int4w = None
        if quantize == "int4w":
            from distill.int4_weights import quantize_int4w
            from teachers import DiffusionTeacher

            network = DiffusionTeacher.from_pretrained(directory).unet.float().eval()
            int4w = quantize_int4w(network, group_size=int4w_group_size)
        return executorch_section(
            directory,
            quantized=quantized,
            max_batch=max_batch,
            eval_samples=int8_eval_samples,
            int4w=int4w,
        )
    return ""


def convert_folder(
    source: str | Path,
    output: str | Path,
    *,
    format: str,
    quantize: str | None = None,
    overwrite: bool = False,
    onnx_opset: int = 18,
    eval_samples: int = 1000,
    max_batch: int = 16,
    int4w_group_size: int = 32,
) -> Path:
    """Copy an export folder (or ``builtin:NAME``, a shipped student) to ``output`` and add its on-device files:
    ``distill convert``, for a student without its training run. ``quantize="int8"`` takes the folder's own int8
    state where a quantization-aware run wrote one (``quantization/``), else quantizes post-training, calibrated on
    the student's sampling trajectory."""
    from teachers.teacher import _resolve_root

    check_runtime_options(format=format, int8=False, quantize=quantize, max_batch=max_batch)
    if format == "diffusers":
        raise ValueError("distill convert writes on-device files: pass --format onnx or --format executorch")
    root = Path(_resolve_root(str(source)))
    if not (root / "scheduler" / "scheduler_config.json").is_file():
        raise FileNotFoundError(
            f"{source} is not an export folder (no scheduler/scheduler_config.json beside the denoiser folder)"
        )
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise FileExistsError(f"output {output} already exists; choose another folder or pass --overwrite")
    with staged_folder(output) as staging:
        for entry in root.iterdir():
            if entry.name in ("onnx", "executorch"):
                continue  # written afresh
            target = staging / entry.name
            shutil.copytree(entry, target) if entry.is_dir() else shutil.copy2(entry, target)
        quantized = None
        if quantize == "int8":
            from distill.quantization import INT8_STATE, load_int8

            if (staging / INT8_STATE).is_file():
                quantized = load_int8(staging)
                quantized.origin = "quantization-aware distillation (the folder's int8 state)"
            else:
                quantized = ptq_from_folder(staging)
        card_path = staging / "README.md"
        card = card_path.read_text() if card_path.is_file() else f"# {root.name}\n"
        card = (
            card.rstrip("\n")
            + "\n"
            + runtime_sections(
                staging,
                format=format,
                quantize=quantize,
                quantized=quantized,
                onnx_opset=onnx_opset,
                int8_eval_samples=eval_samples,
                max_batch=max_batch,
                int4w_group_size=int4w_group_size,
            )
        )
        card_path.write_text(card)
    return output


def _int8_student(module, directory: Path, *, weights: str):
    """The converted int8 graph to export: a quantization-aware run's own (trained scales), else post-training
    quantization of the exported float network calibrated on its sampling trajectory."""
    from distill.quantization import QuantizedDenoiser, convert

    student = module.eval_student() if weights == "ema" else module.student
    if isinstance(student, QuantizedDenoiser):
        converted = convert(student)
        converted.origin = "quantization-aware distillation (the run's trained scales)"
        return converted
    return ptq_from_folder(directory)


def onnx_section(directory: Path, *, opset: int, int8: bool, int8_eval_samples: int, quantized=None) -> str:
    """Write ``directory/onnx/`` from the exported ``unet/`` and return the model card's ONNX section."""
    from distill.onnx_export import (
        INT8_NAME,
        ONNX_NAME,
        export_onnx,
        latency,
        quantize_int8,
    )
    from teachers import DiffusionTeacher

    model = DiffusionTeacher.from_pretrained(directory)
    report = export_onnx(model.unet, directory / "onnx" / ONNX_NAME, opset=opset)
    paths = {"onnx": directory / "onnx" / ONNX_NAME}
    sizes = {"onnx": report.size_bytes}
    if int8:
        sizes["onnx int8"] = quantize_int8(paths["onnx"], directory / "onnx" / INT8_NAME)
        paths["onnx int8"] = directory / "onnx" / INT8_NAME
    report.latency_ms = {
        f"{label} batch {batch}": value
        for batch in (1, 64)
        for label, value in latency(model.unet, paths, batch_size=batch).items()
    }
    torch_size = (directory / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size
    lines = [
        "",
        "## ONNX",
        "",
        f"`onnx/{ONNX_NAME}`: opset {report.opset}, inputs "
        + ", ".join(f"`{k}` {v}" for k, v in report.inputs.items())
        + f" (batch dynamic); max abs error vs PyTorch {report.max_abs_error:.2e} (fp32, onnxruntime, "
        f"batch sizes {report.checked_batch_sizes}).",
        "",
        "| file | size | CPU latency batch 1 | batch 64 |",
        "| --- | ---: | ---: | ---: |",
        f"| PyTorch (safetensors) | {torch_size / 1e6:.2f} MB | {report.latency_ms['pytorch batch 1']:.2f} ms "
        f"| {report.latency_ms['pytorch batch 64']:.2f} ms |",
    ]
    for label, path in paths.items():
        lines.append(
            f"| `onnx/{path.name}` | {sizes[label] / 1e6:.2f} MB | {report.latency_ms[f'{label} batch 1']:.2f} ms "
            f"| {report.latency_ms[f'{label} batch 64']:.2f} ms |"
        )
    lines.append("")
    lines.append("Latency: median forward wall time on this machine's CPU at export time, interleaved.")
    result = {"onnx": json.loads(report.to_json()), "sizes": sizes}
    if quantized is not None:
        from distill.deploy import QDQ_NAME, export_onnx_qdq, onnx_parity

        qdq = export_onnx_qdq(quantized, directory / "onnx" / QDQ_NAME, opset=opset)
        qdq["parity"] = onnx_parity(quantized, directory / "onnx" / QDQ_NAME)
        qdq["origin"] = quantized.origin
        result["int8_qdq"] = qdq
        lines += [
            "",
            f"`onnx/{QDQ_NAME}`: static int8 (weights per channel, activations per tensor; QuantizeLinear/"
            f"DequantizeLinear with the PyTorch graph's scales) from {quantized.origin}; "
            f"{qdq['size_bytes'] / 1e6:.2f} MB; {100 * qdq['macs']['int8_share']:.1f}% of the MACs in int8 "
            f"kernels; relative RMS difference from the PyTorch int8 graph in onnxruntime "
            f"{qdq['parity']['relative_rmse']:.3f} (its int8 kernels round differently).",
        ]
    if int8 and int8_eval_samples > 0:
        from distill.onnx_export import compare_int8

        quality = compare_int8(directory, num_samples=int8_eval_samples)
        result["int8_quality"] = quality
        if quality:
            lines += [
                "",
                f"int8 vs fp32 ONNX on digits ({quality['num_samples']} samples, "
                f"{quality['steps']} steps, same noise and labels):",
                "",
                "| model | FID vs real | FID vs teacher ref | accuracy |",
                "| --- | ---: | ---: | ---: |",
            ]
            for label in ("fp32", "int8"):
                m = quality[label]
                lines.append(
                    f"| {label} | {m['fid_real']:.3f} | {m['fid_ref']:.3f} | {100 * m['accuracy']:.1f}% |"
                )
    (directory / "onnx" / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    return "\n".join(lines) + "\n"
