"""Class-conditional pixel-space pipeline for exported students (and teachers), without remote code.

``ClassConditionalPipeline.from_pretrained(DIR)`` reads an export folder (``unet/`` + ``scheduler/``): the
network class comes from a fixed list (diffusers' UNets and the classes ``students`` defines) and the sampler
from the scheduler's class: ``LCMScheduler`` -> multistep consistency sampling at LCM's timesteps, anything
else -> DDIM on the scheduler's spacing. Both samplers are the library's pure functions, checked against
diffusers' schedulers, so the pipeline reproduces the training module's samples exactly (same seed, same images).
Nothing in the folder is executed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from teachers.sampling import SAMPLERS, is_step_count, per_sample_noise
from teachers.sampling import resolve_sampler as resolve_schedule_sampler
from teachers.teacher import DiffusionTeacher

__all__ = ["SAMPLERS", "ClassConditionalPipeline", "evaluate_model", "resolve_sampler", "sample_images"]


def resolve_sampler(model: DiffusionTeacher, sampler: str = "auto") -> str:
    """``"consistency"`` for a folder whose scheduler is an LCMScheduler, else ``"ddim"`` (unless given)."""
    return resolve_schedule_sampler(model.schedule, sampler)


@torch.no_grad()
def sample_images(
    model: DiffusionTeacher,
    *,
    labels: torch.Tensor | None,
    seeds: torch.Tensor,
    indices: torch.Tensor,
    steps: int,
    guidance_scale: float | None = 1.0,
    sampler: str = "auto",
    spacing: str = "trailing",
    clip_x0: float | str | None = 1.0,
) -> torch.Tensor:
    """Samples in [-1, 1] of a denoiser folder, image ``i`` from noise keyed on ``(seeds[i], indices[i])``.

    The teacher's sampling contract (:meth:`teachers.DiffusionTeacher.sample`): DDIM on ``spacing`` or multistep
    consistency sampling (LCM timesteps, re-noising keyed per image and step), so an image never depends on its
    batch or the number of processes; ``guidance_scale`` is the CFG scale (1 or None: off); ``clip_x0`` "auto"
    clamps x0 for pixel models only. ``labels`` is the condition: class labels, or a text model's encoded prompts.
    """
    device = next(model.unet.parameters()).device
    shape = (model.in_channels, model.sample_size, model.sample_size)
    noise = per_sample_noise(seeds=seeds, indices=indices, shape=shape, device=device)
    return model.sample(
        labels,
        noise,
        steps=steps,
        guidance_scale=guidance_scale,
        sampler=sampler,
        spacing=spacing,
        clip_x0=clip_x0,
        seeds=seeds,
        indices=indices,
    )


def evaluate_model(
    model: DiffusionTeacher,
    evaluator,
    *,
    labels: torch.Tensor,
    steps: int,
    seed: int = 0,
    guidance_scale: float | None = 1.0,
    batch_size: int = 500,
    desc: str | None = None,
) -> dict[str, float]:
    """FID/KID/accuracy (``evaluator.accumulator()``) of ``model``'s samples for ``labels``, image ``i`` from
    noise keyed on ``(seed, i)``: every model scored this way sees the same noise. ``desc`` shows progress: a
    tqdm bar on a terminal, else plain lines on stdout (:func:`plain_progress`)."""
    starts = range(0, labels.shape[0], batch_size)
    if desc is not None:
        from distill.console import interactive

        if interactive():
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=desc, unit="batch")
        else:
            starts = plain_progress(starts, desc=desc, total=labels.shape[0], batch_size=batch_size)
    metrics = evaluator.accumulator()
    for start in starts:
        idx = torch.arange(start, min(start + batch_size, labels.shape[0]))
        images = sample_images(
            model,
            labels=labels[idx],
            seeds=torch.full_like(idx, seed),
            indices=idx,
            steps=steps,
            guidance_scale=guidance_scale,
        )
        metrics.update(images, labels[idx])
    return metrics.compute()


def plain_progress(starts, *, desc: str, total: int, batch_size: int, lines: int = 10):
    """Yield ``starts`` (batch offsets), printing ``desc: 500/1000 samples  0:12`` after every tenth of the batches
    (``lines`` at most) and the last: progress a log file can hold, where a tqdm bar writes carriage returns."""
    import math
    import sys
    import time

    from distill.console import format_duration

    starts = list(starts)
    every = max(1, math.ceil(len(starts) / lines))
    t0 = time.perf_counter()
    for i, start in enumerate(starts):
        yield start
        if (i + 1) % every == 0 or i + 1 == len(starts):
            done = min(start + batch_size, total)
            elapsed = format_duration(time.perf_counter() - t0)
            print(f"{desc}: {done}/{total} samples  {elapsed}", file=sys.stdout, flush=True)


@dataclass
class ImagePipelineOutput:
    images: torch.Tensor  # (N, C, H, W) in [0, 1]


class ClassConditionalPipeline:
    """Generate from a class-conditional (or unconditional) pixel-space denoiser folder.

    Args:
        model: the denoiser adapter (its ``unet`` and noise schedule).
    """

    def __init__(self, model: DiffusionTeacher) -> None:
        self.model = model

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, dtype: str | torch.dtype | None = None
    ) -> ClassConditionalPipeline:
        return cls(DiffusionTeacher.from_pretrained(path, dtype=dtype))

    @property
    def sampler(self) -> str:
        return resolve_sampler(self.model)

    @property
    def default_steps(self) -> int:
        return 4 if self.sampler == "consistency" else 50

    def to(self, device: torch.device | str) -> ClassConditionalPipeline:
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(
        self,
        class_labels: list[int] | torch.Tensor | None = None,
        *,
        num_images: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float = 1.0,
        seed: int = 0,
        clip_x0: float | str | None = "auto",
    ) -> ImagePipelineOutput:
        """Images for ``class_labels`` (one each; None: ``num_images`` unconditional ones).

        ``guidance_scale`` is the usual CFG scale: networks with a ``timestep_cond`` input (consistency and
        guided students) take ``guidance_scale - 1`` embedded there and run once per step; others run CFG.
        Noise is drawn per image from ``(seed, index)``, so an image does not depend on the batch it is in.
        """
        model = self.model
        device = next(model.unet.parameters()).device
        labels = None
        if class_labels is not None:
            labels = torch.as_tensor(class_labels, dtype=torch.long, device=device).reshape(-1)
            if model.num_classes is None:
                raise ValueError("this model is unconditional: pass num_images instead of class_labels")
            if labels.min() < 0 or labels.max() >= model.num_classes:
                raise ValueError(
                    f"class_labels must be in [0, {model.num_classes - 1}], got {labels.tolist()}"
                )
            n = len(labels)
        elif num_images is not None:
            if not is_step_count(num_images):
                raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
            n = num_images
        else:
            raise ValueError("pass class_labels or num_images")
        if num_inference_steps is not None and not is_step_count(num_inference_steps):
            raise ValueError(
                f"num_inference_steps must be a positive integer, got {num_inference_steps!r}; leave it None for "
                f"the sampler's default ({self.default_steps})"
            )
        if not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number (1: no guidance), got {guidance_scale}")
        steps = self.default_steps if num_inference_steps is None else num_inference_steps
        images = sample_images(
            model,
            labels=labels,
            seeds=torch.full((n,), seed),
            indices=torch.arange(n),
            steps=steps,
            guidance_scale=guidance_scale,
            sampler=self.sampler,
            spacing=getattr(model.schedule, "timestep_spacing", "trailing"),  # a flow grid has none
            clip_x0=clip_x0,
        )
        return ImagePipelineOutput(images=images.add(1).div(2).clamp(0, 1))
