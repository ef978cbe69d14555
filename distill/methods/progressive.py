"""Progressive distillation (Salimans & Ho 2022), optionally guided (Meng et al. 2023), for any student.

Rounds halve the sampler's step count: in a round the student learns to do in ONE DDIM step what its teacher
does in TWO, on the teacher's trailing grid (the student's grid is every other teacher grid point, so a
trailing N/2-step sampler uses exactly the student's training timesteps). For a student step ``s -> s''``:
  1. ``z_s = alpha_s x0 + sigma_s eps``; the teacher takes DDIM steps ``s -> s' -> s''`` (no_grad);
  2. the x-target solves one DDIM step from ``z_s`` landing on the teacher's ``z_s''``
     (:func:`teachers.parameterization.progressive_x_target`; at the last step the teacher's x-prediction);
  3. loss ``max(SNR_s, 1) * ||x_student - x~||^2`` (SNR-truncated weighting).
Round 1's teacher is the frozen teacher (it may have another architecture); at a round's end the student's
EMA (or raw) weights become the next round's frozen teacher (``round_teacher``), and optimizer and LR schedule
restart. The round index, its first step and the round teacher are in the checkpoint, so a run resumes
mid-round. Guided: with ``guidance_max > 1`` round 1's teacher runs CFG at a scale drawn from
``[guidance_min, guidance_max]`` and every student takes it through ``timestep_cond`` (embedded as LCM's
``w = scale - 1``); later rounds' teachers take it the same way, so sampling needs one forward per step. The
objective is :mod:`distill.objectives.progressive`.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from distill.ema import EMA
from distill.features import transfer_weights
from distill.methods.base import DistillationModule
from distill.methods.checks import check_guidance
from distill.methods.ranges import check_finite
from distill.objectives import ProgressiveOptions, draw_progressive, progressive_distillation_loss
from distill.rng import GeneratorRandom, KeyedRandom
from teachers.teacher import DiffusionTeacher


def round_schedule(teacher_steps: int, final_steps: int) -> list[int]:
    """Teacher step counts of each round: ``teacher_steps, teacher_steps / 2, ..., 2 * final_steps``."""
    if final_steps < 1 or teacher_steps <= final_steps:
        raise ValueError(
            f"need teacher_steps > final_steps >= 1, got teacher_steps={teacher_steps}, final_steps={final_steps}"
        )
    rounds, n = [], teacher_steps
    while n > final_steps:
        if n % 2:
            raise ValueError(
                f"teacher_steps={teacher_steps} does not halve down to final_steps={final_steps} (reached {n}, "
                "odd): use powers of two, e.g. teacher_steps=64, final_steps=1"
            )
        rounds.append(n)
        n //= 2
    if n != final_steps:
        raise ValueError(
            f"teacher_steps={teacher_steps} does not halve down to final_steps={final_steps} (it passes it)"
        )
    return rounds


class ProgressiveDistillation(DistillationModule):
    """Progressive (and guided progressive) distillation.

    Args:
        teacher: the frozen teacher (round 1's teacher).
        student: the student; with a guidance range it needs ``time_cond_proj_dim``.
        teacher_steps: round 1's teacher step count (the student learns half of it).
        final_steps: the last round's student step count.
        round_steps: optimizer steps per round.
        promote: "ema" or "student": which weights become the next round's teacher.
        guidance_min, guidance_max: the classifier-free guidance-scale range of the guided teacher (Meng et al.;
            1, 1: unguided).
        init_from_teacher: copy teacher tensors where names and shapes match.
        **kwargs: the options every method shares (``DistillationModule``: optimizer, EMA, evaluation, ...);
            validation evaluates the current round's student step count unless ``eval_steps`` is given.
    """

    default_eval_guidance_scale = 1.0

    def __init__(
        self,
        teacher: DiffusionTeacher,
        student: nn.Module,
        teacher_steps: int = 64,
        final_steps: int = 1,
        round_steps: int = 1000,
        promote: str = "ema",
        guidance_min: float = 1.0,
        guidance_max: float = 1.0,
        init_from_teacher: bool = True,
        **kwargs: Any,
    ) -> None:
        check_finite({"guidance_min": guidance_min, "guidance_max": guidance_max})
        self.rounds = round_schedule(teacher_steps, final_steps)
        if teacher_steps > teacher.schedule.num_train_timesteps:
            raise ValueError(
                f"teacher_steps={teacher_steps} exceeds the teacher's {teacher.schedule.num_train_timesteps} timesteps"
            )
        if round_steps < 1:
            raise ValueError(f"round_steps must be >= 1, got {round_steps}")
        if promote not in ("ema", "student"):
            raise ValueError(f"promote must be 'ema' or 'student', got {promote!r}")
        if promote == "ema" and kwargs.get("ema_decay", 0.999) is None:
            raise ValueError("promote='ema' needs ema_decay; set ema_decay or promote='student'")
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
            input_needed=guidance_max > 1.0,
        )
        self.options = ProgressiveOptions(guided=guidance_max > 1.0, embed_dim=self.embed_dim)
        self.round_teacher = EMA(student, decay=0.0, warmup=False)  # a frozen student-sized copy
        self._ddp_params_and_buffers_to_ignore += [
            f"round_teacher.{k}" for k in self.round_teacher.state_dict()
        ]
        # plain ints (read every step without a device sync), written to and read from the checkpoint
        self.round_index = 0
        self.round_start = 0
        self.round_steps = round_steps
        self.final_steps = final_steps
        self.promote = promote
        self.guidance_min, self.guidance_max = guidance_min, guidance_max

    # -- rounds --------------------------------------------------------------------------------------------
    @property
    def current_teacher_steps(self) -> int:
        return self.rounds[min(self.round_index, len(self.rounds) - 1)]

    @property
    def current_student_steps(self) -> int:
        return self.current_teacher_steps // 2

    @property
    def default_eval_steps(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.current_student_steps,)

    @property
    def total_steps(self) -> int:
        return self.round_steps * len(self.rounds)

    def teacher_grid(self) -> torch.Tensor:
        """The current round's teacher grid (the schedule's nested progressive grids; see
        ``progressive_grid`` of NoiseSchedule / FlowSchedule)."""
        return self.teacher.schedule.progressive_grid(
            self.current_teacher_steps, final_steps=self.final_steps
        )

    def training_losses(self, batch, rng: KeyedRandom | GeneratorRandom | None = None):
        x0, cond = self.prepare_batch(batch)
        rng = self.train_random(x0.shape[0]) if rng is None else rng
        grid = self.teacher_grid()
        draws = draw_progressive(
            rng, x0=x0, grid=grid, guidance_min=self.guidance_min, guidance_max=self.guidance_max
        )
        losses = progressive_distillation_loss(
            teacher=self.teacher,
            student=self.student,
            x0=x0,
            cond=cond,
            draws=draws,
            grid=grid,
            options=self.options,
            round_teacher=None if self.round_index == 0 else self.round_teacher.module,
        )
        return {
            **losses,
            "round": torch.tensor(float(self.round_index)),
            "student_steps": torch.tensor(float(self.current_student_steps)),
        }

    def validation_step(self, batch, batch_idx: int) -> None:
        losses = self.training_losses(batch, rng=self.eval_random(batch_idx))
        self.log("val/loss", losses["loss"])
        self.log("val/student_steps", float(self.current_student_steps))

    def after_step(self, steps_done: int) -> None:
        super().after_step(steps_done)
        if steps_done - self.round_start >= self.round_steps and self.round_index < len(self.rounds) - 1:
            self.next_round(steps_done)

    def on_save_checkpoint(self, checkpoint) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["progressive_round"] = {"index": self.round_index, "start": self.round_start}

    def on_load_checkpoint(self, checkpoint) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("progressive_round")
        if state is None:
            raise RuntimeError(
                "checkpoint has no progressive round state: was it written by ProgressiveDistillation?"
            )
        self.round_index, self.round_start = int(state["index"]), int(state["start"])

    @torch.no_grad()
    def next_round(self, steps_done: int) -> None:
        """The promoted weights become the frozen teacher; the optimizer and LR schedule restart."""
        source = self.ema.module if self.promote == "ema" else self.student
        for dst, src in zip(self.round_teacher.module.parameters(), source.parameters(), strict=True):
            dst.copy_(src)
        for dst, src in zip(self.round_teacher.module.buffers(), source.buffers(), strict=True):
            dst.copy_(src)
        self.round_index += 1
        self.round_start = steps_done
        rank_zero_info(
            f"progressive distillation: round {self.round_index + 1}/{len(self.rounds)} at step "
            f"{steps_done}: {self.current_teacher_steps} -> {self.current_student_steps} steps"
        )
        self.trainer.strategy.setup_optimizers(self.trainer)

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.trainer.max_steps > 0 and self.trainer.max_steps < self.total_steps:
            rank_zero_info(
                f"max_steps={self.trainer.max_steps} stops before the last round ends ({len(self.rounds)} rounds x "
                f"{self.round_steps} steps = {self.total_steps})"
            )

    def export_schedule(self):
        """The grid the student learned as a stock scheduler config: DDIM on trailing spacing for a discrete
        teacher, the teacher's FlowMatchEulerDiscreteScheduler for a flow teacher."""
        return self.teacher.schedule.deterministic_export()
