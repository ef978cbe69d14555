"""Trajectory distillation (:mod:`distill.objectives.trajectory`): a student matches a sampler's network at the
inputs that sampler produces. Its main use is quantization-aware distillation of a finished student into its own
int8 copy (``quantize: distill.quantization.Int8QAT``, the teacher being the fp32 student's folder), as EfficientDM
distils a full-precision diffusion model into its quantized one on the denoising trajectory."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from distill.features import TransferReport, transfer_weights
from distill.methods.base import DistillationModule
from distill.methods.knowledge import check_compatible
from distill.methods.ranges import check_at_least, check_finite, check_step_counts
from distill.objectives.trajectory import (
    TRAJECTORY_LOSSES,
    TrajectoryOptions,
    draw_trajectory,
    trajectory_matching_loss,
)
from distill.rng import GeneratorRandom, KeyedRandom
from teachers.network import time_cond_dim
from teachers.teacher import DiffusionTeacher


class TrajectoryDistillation(DistillationModule):
    """The student learns the teacher's outputs along the teacher's own sampling trajectories.

    Every batch, the teacher samples from keyed noise with the batch's conditions (class labels or prompts; the
    images are not used) at each step count of ``steps``, with its own scheduler (DDIM, Euler, or multistep
    consistency for an LCMScheduler folder), and every call of its network is replayed on the student with the same
    arguments. The student exports with the teacher's scheduler, so it samples exactly as the teacher does.

    Args:
        teacher: the sampler to match, e.g. a finished student's folder (``builtin:digits_consistency``).
        student: the network trained to match it, called with the teacher network's arguments (same inputs:
            channels, sample size, conditioning, ``timestep_cond`` width). Usually the same folder with
            ``quantize: distill.quantization.Int8QAT``.
        steps: the step counts whose trajectories are matched, every one in every batch (the counts the student
            will be sampled at).
        guidance_scale: the teacher's guidance scale while sampling (1: none; a guidance-distilled network takes
            ``scale - 1`` through ``timestep_cond``).
        loss: "mse" (per element) or "huber" (LCM's pseudo-Huber distance per sample, with ``huber_c``).
        init_from_teacher: copy every teacher tensor whose name and shape match into the student first (a report is
            printed); a student loaded from the teacher's own folder already holds them.
        **kwargs: the options every method shares (``DistillationModule``: optimizer, EMA, quantize, evaluation,
            ...). ``check_student_teacher`` defaults to false here: the student is usually the teacher's copy.
    """

    default_eval_steps = (4,)
    default_eval_guidance_scale = 1.0

    def __init__(
        self,
        teacher: DiffusionTeacher,
        student: nn.Module,
        steps: list[int] | None = None,
        guidance_scale: float = 1.0,
        loss: str = "mse",
        huber_c: float = 0.001,
        init_from_teacher: bool = False,
        **kwargs: Any,
    ) -> None:
        steps = [4] if steps is None else steps
        self.steps = check_step_counts(steps, key="steps", max_steps=teacher.schedule.num_train_timesteps)
        check_finite({"guidance_scale": guidance_scale, "huber_c": huber_c})
        check_at_least(guidance_scale, key="guidance_scale", minimum=1.0)
        check_at_least(huber_c, key="huber_c", minimum=0)
        if loss not in TRAJECTORY_LOSSES:
            raise ValueError(
                f"loss must be one of {TRAJECTORY_LOSSES}, got {loss!r}: set model.init_args.loss"
            )
        if guidance_scale != 1.0 and teacher.cond_kind is None:
            raise ValueError(
                f"guidance_scale={guidance_scale} needs a conditional teacher; set model.init_args.guidance_scale: 1"
            )
        check_compatible(teacher, student)
        t_dim, s_dim = time_cond_dim(teacher.unet), time_cond_dim(student)
        if t_dim != s_dim:
            raise ValueError(
                f"student: the teacher's network takes a timestep_cond (guidance embedding) of width {t_dim} and the "
                f"student's is {s_dim}; the student is called with the teacher's own inputs, so build it with "
                f"time_cond_proj_dim={t_dim}"
            )
        self.init_report: TransferReport | None = None
        if init_from_teacher:
            self.init_report = transfer_weights(source=teacher.unet, target=student)
            rank_zero_info(self.init_report.summary())
        kwargs.setdefault("check_student_teacher", False)
        if kwargs.get("eval_steps") is None:
            kwargs["eval_steps"] = list(self.steps)
        super().__init__(teacher, student, **kwargs)
        self.options = TrajectoryOptions(
            steps=tuple(self.steps), guidance_scale=float(guidance_scale), loss=loss, huber_c=float(huber_c)
        )

    def training_losses(self, batch, rng: KeyedRandom | GeneratorRandom | None = None):
        x0, cond = self.prepare_batch(batch)
        rng = self.train_random(x0.shape[0]) if rng is None else rng
        draws = draw_trajectory(rng, batch=x0.shape[0], shape=tuple(x0.shape[1:]), steps=self.steps)
        return trajectory_matching_loss(
            teacher=self.teacher, student=self.student, cond=cond, draws=draws, options=self.options
        )

    def validation_step(self, batch, batch_idx: int) -> None:
        """The evaluated student's distance to the teacher on fixed draws (the same at every validation)."""
        x0, cond = self.prepare_batch(batch)
        draws = draw_trajectory(
            self.eval_random(batch_idx), batch=x0.shape[0], shape=tuple(x0.shape[1:]), steps=self.steps
        )
        losses = trajectory_matching_loss(
            teacher=self.teacher, student=self.eval_student(), cond=cond, draws=draws, options=self.options
        )
        self.log("val/trajectory", losses["loss"], prog_bar=True)
