"""Consistency distillation (Song et al. 2023) as Latent Consistency Models do it (Luo et al. 2023), for any
student, so architecture and step distillation happen in one run (:mod:`distill.objectives.consistency`).

After every optimizer step the target network moves towards the student (``target_decay``; LCM 0.95); the
evaluation EMA (``ema_decay``) is what validation and export use. Both are in the checkpoint. Validation samples
by multistep consistency sampling at LCM's timesteps, exactly as the exported LCMScheduler folder samples.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from distill.ema import EMA
from distill.features import transfer_weights
from distill.methods.base import DistillationModule
from distill.methods.checks import check_guidance
from distill.methods.ranges import check_at_least, check_finite, check_probability
from distill.objectives import ConsistencyOptions, consistency_distillation_loss, draw_consistency
from distill.quantization import float_network
from distill.rng import GeneratorRandom, KeyedRandom
from teachers.teacher import DiffusionTeacher


class ConsistencyDistillation(DistillationModule):
    """Latent-consistency-style distillation of a teacher into a few-step student.

    Args:
        teacher: the frozen teacher.
        student: the student network; with ``guidance_max > guidance_min`` it needs a ``timestep_cond`` input of
            width ``time_cond_proj_dim`` (diffusers UNets and TimmUNet take it) for the guidance embedding.
        original_steps: the skipping grid's size (LCM: 50 of 1000 timesteps, k = 20).
        guidance_min, guidance_max: the range of classifier-free guidance scales the teacher's solver step uses
            (1 = none; equal values fix it). The student learns the guided teacher with the scale as an input
            (LCM embeds ``w = scale - 1``), so it samples guided in one forward per step.
        target_decay: EMA rate of the target network (LCM: 0.95).
        loss: "huber" (elementwise pseudo-Huber, LCM) or "l2".
        huber_c: the pseudo-Huber c (LCM: 0.001).
        sigma_data, timestep_scaling: boundary scalings (LCMScheduler: 0.5 and 10).
        init_from_teacher: copy teacher tensors where names and shapes match (LCM starts from the teacher).
        cond_drop_prob: condition dropout for the student's own conditioning (0: none, as LCM).
        **kwargs: the options every method shares (``DistillationModule``: optimizer, EMA, evaluation, ...).
    """

    default_eval_steps = (1, 2, 4)
    default_eval_guidance_scale = 1.0

    def __init__(
        self,
        teacher: DiffusionTeacher,
        student: nn.Module,
        original_steps: int = 50,
        guidance_min: float = 1.0,
        guidance_max: float = 1.0,
        target_decay: float = 0.95,
        loss: str = "huber",
        huber_c: float = 0.001,
        sigma_data: float = 0.5,
        timestep_scaling: float = 10.0,
        init_from_teacher: bool = True,
        cond_drop_prob: float = 0.0,
        **kwargs: Any,
    ) -> None:
        check_probability(cond_drop_prob, key="cond_drop_prob", example=0.0)
        check_probability(target_decay, key="target_decay", example=0.95, open_above=True)
        check_finite({"guidance_min": guidance_min, "guidance_max": guidance_max})
        for key, value in (
            ("huber_c", huber_c),
            ("sigma_data", sigma_data),
            ("timestep_scaling", timestep_scaling),
        ):
            check_at_least(value, key=key, minimum=0)
        schedule = teacher.schedule
        if not 1 <= original_steps <= schedule.num_train_timesteps:
            raise ValueError(
                f"original_steps must be in [1, {schedule.num_train_timesteps}] (the teacher's timesteps), got "
                f"{original_steps}"
            )
        solver_grid = schedule.skipping_grid(original_steps)  # refuses a grid the schedule cannot build
        if not 0.0 <= target_decay < 1.0:
            raise ValueError(f"target_decay must be in [0, 1), got {target_decay}")
        options = ConsistencyOptions(
            loss=loss, huber_c=huber_c, sigma_data=sigma_data, timestep_scaling=timestep_scaling
        )
        self.init_report = None
        if init_from_teacher:
            self.init_report = transfer_weights(source=teacher.unet, target=student)
            rank_zero_info(self.init_report.summary())
        super().__init__(teacher, student, **kwargs)
        self.embed_dim = check_guidance(
            teacher,
            student,
            guidance_min=guidance_min,
            guidance_max=guidance_max,
            eval_guidance_scale=self.eval_guidance_scale,
            input_needed=guidance_max > guidance_min,
        )
        self.options = dataclasses.replace(options, guided=guidance_max > 1.0, embed_dim=self.embed_dim)
        # the target network is float (an EMA of the student's float weights; a quantization-aware student's own
        # fake-quantization stays in the student)
        self.target = EMA(float_network(self.student), decay=target_decay, warmup=False)
        self._ddp_params_and_buffers_to_ignore += [f"target.{k}" for k in self.target.state_dict()]
        self.original_steps = original_steps
        self.register_buffer("solver_timesteps", solver_grid, persistent=False)
        self.guidance_min, self.guidance_max = guidance_min, guidance_max
        self.sigma_data, self.timestep_scaling = sigma_data, timestep_scaling
        self.cond_drop_prob = cond_drop_prob

    def training_losses(self, batch, rng: KeyedRandom | GeneratorRandom | None = None):
        x0, cond = self.prepare_batch(batch)
        rng = self.train_random(x0.shape[0]) if rng is None else rng
        draws = draw_consistency(
            rng,
            x0=x0,
            solver_grid=self.solver_timesteps,
            guidance_min=self.guidance_min,
            guidance_max=self.guidance_max,
            cond=cond,
            cond_drop_prob=self.cond_drop_prob,
        )
        return consistency_distillation_loss(
            teacher=self.teacher,
            student=self.student,
            target=self.target.module,
            x0=x0,
            cond=cond,
            draws=draws,
            options=self.options,
        )

    def validation_step(self, batch, batch_idx: int) -> None:
        losses = self.training_losses(batch, rng=self.eval_random(batch_idx))
        self.log("val/consistency", losses["loss"])

    def after_step(self, steps_done: int) -> None:
        super().after_step(steps_done)
        self.target.update(float_network(self.student))

    def sampling_schedule(self):
        """The teacher's schedule as its family's consistency scheduler config: LCMScheduler with this run's
        skipping grid and scalings, or FlowMatchLCMScheduler (same shift) for a flow teacher."""
        return self.teacher.schedule.consistency_export(
            original_steps=self.original_steps, timestep_scaling=self.timestep_scaling
        )

    def sampler_options(self) -> dict[str, Any]:
        return {"sigma_data": self.sigma_data}

    def export_schedule(self):
        """:meth:`sampling_schedule`, which diffusers' LCMScheduler loads (it fixes sigma_data = 0.5) or
        FlowMatchLCMScheduler (no boundary scalings: a flow network's x0 is the identity at s = 0)."""
        if self.sigma_data != 0.5 and self.teacher.schedule.family == "vp":
            raise ValueError(
                f"LCMScheduler fixes sigma_data = 0.5; this run used {self.sigma_data}, which no diffusers scheduler "
                "config can express"
            )
        return self.sampling_schedule()
