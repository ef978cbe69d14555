"""Evaluation at validation, as Lightning callbacks over the sampling contract (``module.sample``): a sample
grid and generative metrics that work for every method and teacher kind.

- :class:`SampleGrid`: the teacher's row (DDIM at ``teacher_steps``) above one student row per step count, from
  the same noise and conditions; class-conditional teachers show ``samples_per_class`` rows of every class, text
  teachers one column per prompt of a fixed list (latents decoded by the teacher's VAE).
- :class:`GenerativeMetrics`: an evaluator's metrics (digits: FID/KID vs real and vs the teacher reference,
  class accuracy) of ``num_samples`` student samples per step count, logged as ``val/{k}step/{name}``.

Both draw their noise keyed on ``(seed, index)``, so every validation sees the same images, and the frozen
teacher's row is sampled once per run (``module.teacher_samples``). Methods configure them from their ``eval_*``
options (``DistillationModule.configure_callbacks``); a config may also list them under ``trainer.callbacks``.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from teachers.sampling import per_sample_noise

__all__ = ["GenerativeMetrics", "SampleGrid", "balanced_labels", "image_grid", "log_image"]


def balanced_labels(n: int, num_classes: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` labels cycling through the classes (0, 1, ..., C-1, 0, ...), balanced to within one."""
    return torch.arange(n, device=device) % num_classes


def image_grid(images: torch.Tensor, *, nrow: int) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> one (C, H', W') grid in [0, 1] with 1-pixel gaps, enlarged for viewing
    (nearest neighbour, an integer factor: :func:`distill.images.viewable_grid`)."""
    from distill.images import viewable_grid

    return viewable_grid(images.float().clamp(-1, 1).add(1).div(2), nrow=nrow, padding=1, pad_value=1.0)


def log_image(module: L.LightningModule, tag: str, image: torch.Tensor) -> None:
    """Log an image to every TensorBoard logger of the module's trainer."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in module.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image.cpu(), global_step=module.global_step)


def _generator_spec(module: L.LightningModule):
    """What the callbacks need to know of the model being sampled: the teacher (or the trained model itself,
    for diffusion training): its condition kind, classes, input shape and latent decoding."""
    return getattr(module, "teacher", None) or module


def eval_noise(spec, n: int, *, seed: int, device) -> torch.Tensor:
    """The validation noise: ``n`` samples keyed on ``(seed, index)``, shaped like the network's inputs."""
    shape = (spec.in_channels, spec.sample_size, spec.sample_size)
    return per_sample_noise(seeds=torch.full((n,), seed), indices=torch.arange(n), shape=shape, device=device)


def _resolve(value, default):
    return default if value is None else value


class SampleGrid(L.Callback):
    """A grid of validation samples: teacher row(s) on top, then the student at each step count.

    Args:
        samples_per_class: class-conditional teachers: rows per class (each row holds every class);
            unconditional ones: rows of 8 images.
        prompts: text teachers: the fixed prompt list (one column each); needs the teacher's text encoder.
        steps: the student's step counts, one block of rows each (None: the module's ``eval_steps``).
        guidance_scale: classifier-free guidance scale of teacher and student (None: the module's
            ``eval_guidance_scale``; 1: none).
        teacher_steps: the teacher's DDIM steps (None: no teacher row).
        seed: seed of the grid's noise.
        clip: a local CLIP folder (``CLIPModel.save_pretrained`` layout): text teachers' rows are also scored by
            CLIP score against their prompts, logged as ``val/teacher/clip_score`` and ``val/{k}step/clip_score``.
    """

    def __init__(
        self,
        samples_per_class: int = 2,
        prompts: list[str] | None = None,
        steps: list[int] | None = None,
        guidance_scale: float | None = None,
        teacher_steps: int | None = 25,
        seed: int = 0,
        clip: str | None = None,
    ) -> None:
        self.samples_per_class = samples_per_class
        self.clip = clip
        self._clip_score = None
        self.prompts = list(prompts) if prompts else []
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.teacher_steps = teacher_steps
        self.seed = seed
        self._warned = False

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            rank_zero_warn(message)
            self._warned = True

    def conditions(self, module: L.LightningModule):
        """``(cond, n, images per row)`` of the grid, or None when there is nothing to show."""
        spec = _generator_spec(module)
        kind = spec.cond_kind
        if kind == "text":
            if not self.prompts:
                self._warn_once(
                    "SampleGrid: a text teacher's grid needs prompts (eval_prompts); no grid is logged"
                )
                return None
            if not getattr(spec, "text_encoders", None):
                self._warn_once(
                    "SampleGrid: the teacher has no text encoder to encode the grid's prompts (trained from "
                    "precomputed embeddings); load it with latent_parts: true to see a prompt grid"
                )
                return None
            return spec.encode_prompt(self.prompts), len(self.prompts), len(self.prompts)
        if kind == "class" and self.samples_per_class > 0:
            classes = int(spec.num_classes)
            n = classes * self.samples_per_class
            return balanced_labels(n, classes, device=module.device), n, classes
        if kind is None and self.samples_per_class > 0:
            return None, 8 * self.samples_per_class, 8
        return None

    @torch.no_grad()
    def rows(self, module: L.LightningModule) -> tuple[list[torch.Tensor], int] | None:
        """The grid's rows (images in [-1, 1], decoded from latents) and the images per row."""
        found = self.conditions(module)
        if found is None:
            return None
        cond, n, per_row = found
        spec = _generator_spec(module)
        guidance = float(_resolve(self.guidance_scale, module.eval_guidance_scale))
        steps = list(_resolve(self.steps, module.eval_steps))
        noise = eval_noise(spec, n, seed=self.seed, device=module.device)
        rows = []
        teacher = getattr(module, "teacher", None)
        if teacher is not None and self.teacher_steps:
            key = ("grid", n, self.teacher_steps, guidance, self.seed, tuple(self.prompts))
            rows.append(
                module.teacher_samples(
                    key,
                    lambda: teacher.sample(
                        cond, noise, steps=self.teacher_steps, guidance_scale=guidance, sampler="ddim"
                    ),
                )
            )
        rows += [module.sample(cond, noise, steps=k, guidance_scale=guidance) for k in steps]
        if getattr(spec, "is_latent", False):
            rows = [spec.decode_latents(r.to(module.device)) for r in rows]
        return rows, per_row

    def tag(self, module: L.LightningModule) -> str:
        steps = "_".join(f"{k}step" for k in _resolve(self.steps, module.eval_steps))
        teacher = getattr(module, "teacher", None) is not None and self.teacher_steps
        if teacher:
            return f"samples/teacher_{self.teacher_steps}ddim_then_student_{steps}"
        return f"samples/{'student' if getattr(module, 'teacher', None) is not None else 'model'}_{steps}"

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        found = self.rows(module)
        if found is None:
            return
        rows, per_row = found
        log_image(module, self.tag(module), image_grid(torch.cat(rows), nrow=per_row))
        if self.clip and self.prompts and _generator_spec(module).cond_kind == "text":
            self.log_clip_scores(module, rows)

    def log_clip_scores(self, module: L.LightningModule, rows: list[torch.Tensor]) -> None:
        """CLIP score of each row against the prompts (teacher row first when there is one)."""
        if self._clip_score is None:
            from distill.clip_score import CLIPScore

            self._clip_score = CLIPScore(self.clip, device=module.device)
        names = [f"{k}step" for k in _resolve(self.steps, module.eval_steps)]
        if len(rows) > len(names):
            names = ["teacher", *names]
        for name, images in zip(names, rows, strict=True):
            score = self._clip_score(images.float().clamp(-1, 1).add(1).div(2), self.prompts)
            module.log(f"val/{name}/clip_score", score)


class GenerativeMetrics(L.Callback):
    """Generative metrics of the student's samples at each validation.

    Args:
        evaluator: the evaluator (``distill.metrics.DigitsEvaluator`` for digits).
        num_samples: samples per step count (balanced labels; noise keyed on ``(seed, index)``).
        steps: the student's step counts (None: the module's ``eval_steps``).
        guidance_scale: classifier-free guidance scale (None: the module's ``eval_guidance_scale``).
        seed: seed of the noise.
        batch_size: samples per forward batch.
    """

    def __init__(
        self,
        evaluator,
        num_samples: int = 500,
        steps: list[int] | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
        batch_size: int = 500,
    ) -> None:
        self.evaluator = evaluator
        self.num_samples = num_samples
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.seed = seed
        self.batch_size = batch_size

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        spec = _generator_spec(module)
        wanted = getattr(self.evaluator, "conditioning", "class")
        if spec.cond_kind == "text" and wanted != "text":
            raise ValueError(
                f"evaluator: {type(self.evaluator).__name__} scores class-conditional samples, but the teacher is "
                "text-conditioned; set evaluator: null (or use a text-to-image evaluator)"
            )
        if wanted == "text":
            raise ValueError(
                f"evaluator: {type(self.evaluator).__name__} scores images generated from prompts, which validation "
                "during fit does not draw; set evaluator: null and score the export with "
                "`distill test -c configs/sd15/test.yaml`"
            )

    @torch.no_grad()
    def evaluate(self, module: L.LightningModule, steps: int) -> dict[str, float]:
        spec = _generator_spec(module)
        guidance = float(_resolve(self.guidance_scale, module.eval_guidance_scale))
        n = self.num_samples
        labels = balanced_labels(n, spec.num_classes, device=module.device) if spec.num_classes else None
        noise = eval_noise(spec, n, seed=self.seed, device=module.device)
        metrics = self.evaluator.accumulator()
        for start in range(0, n, self.batch_size):
            idx = torch.arange(start, min(start + self.batch_size, n))
            lab = None if labels is None else labels[idx]
            images = module.sample(
                lab,
                noise[idx],
                steps=steps,
                guidance_scale=guidance,
                seeds=torch.full_like(idx, self.seed),
                indices=idx,
            )
            metrics.update(images, lab)
        return {k: float(v) for k, v in metrics.compute().items() if k != "num_samples"}

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.num_samples <= 0:
            return
        self.evaluator.to(module.device)
        steps = list(_resolve(self.steps, module.eval_steps))
        for i, k in enumerate(steps):
            for key, value in self.evaluate(module, k).items():
                module.log(f"val/{k}step/{key}", value, prog_bar=i == 0 and key in ("fid_real", "accuracy"))
