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
mid-round. Guided: with ``w_max > 0`` round 1's teacher runs CFG at scale ``1 + w`` (w ~ U[w_min, w_max],
LCM/Meng form) and every student takes ``w`` through ``timestep_cond``; later rounds' teachers take it the same
way, so sampling needs one forward per step.
"""

from __future__ import annotations

from functools import partial

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from distill.ema import EMA
from distill.features import transfer_weights
from distill.methods.base import DistillationModule
from distill.methods.common import (
    balanced_labels,
    check_data_matches,
    check_guidance,
    eval_noise,
    evaluate_generator,
    image_grid,
    log_image,
    null_class_of,
)
from distill.metrics import DigitsEvaluator
from distill.rng import GeneratorRandom, KeyedRandom
from teachers.network import denoise
from teachers.parameterization import (
    ddim_step,
    guidance_scale_embedding,
    progressive_x_target,
    truncated_snr_weight,
)
from teachers.sampling import ddim_sample
from teachers.schedule import alpha_sigma, previous_timesteps, q_sample, timestep_grid
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
        w_min, w_max: guidance range (Meng et al.; LCM form, teacher CFG scale 1 + w); 0, 0: unguided.
        init_from_teacher: copy teacher tensors where names and shapes match.
        evaluator, eval_num_samples, eval_guidance: validation FID/accuracy with the current round's step count.
        samples_per_class: rows per class of the validation grid.
        optimizer, lr_scheduler, ema_decay, nonfinite, seed, gradient_checkpointing, channels_last,
            compile_student: as in
            ``DistillationModule`` (``nonfinite``: "stop"
            or "skip" on a non-finite loss).
    """

    def __init__(
        self,
        teacher: DiffusionTeacher,
        student: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        ema_decay: float | None = 0.999,
        nonfinite: str = "stop",
        seed: int | None = None,
        gradient_checkpointing: bool = False,
        channels_last: bool = False,
        compile_student: bool = False,
        teacher_steps: int = 64,
        final_steps: int = 1,
        round_steps: int = 1000,
        promote: str = "ema",
        w_min: float = 0.0,
        w_max: float = 0.0,
        init_from_teacher: bool = True,
        evaluator: DigitsEvaluator | None = None,
        eval_num_samples: int = 500,
        eval_guidance: float = 0.0,
        samples_per_class: int = 2,
        eval_seed: int = 0,
    ) -> None:
        self.rounds = round_schedule(teacher_steps, final_steps)
        if teacher_steps > teacher.schedule.num_train_timesteps:
            raise ValueError(
                f"teacher_steps={teacher_steps} exceeds the teacher's {teacher.schedule.num_train_timesteps} timesteps"
            )
        if round_steps < 1:
            raise ValueError(f"round_steps must be >= 1, got {round_steps}")
        if promote not in ("ema", "student"):
            raise ValueError(f"promote must be 'ema' or 'student', got {promote!r}")
        if promote == "ema" and ema_decay is None:
            raise ValueError("promote='ema' needs ema_decay; set ema_decay or promote='student'")
        self.embed_dim = check_guidance(
            teacher, student, w_min=w_min, w_max=w_max, eval_guidance=eval_guidance, input_needed=w_max > 0
        )
        self.init_report = None
        if init_from_teacher:
            self.init_report = transfer_weights(source=teacher.unet, target=student)
            rank_zero_info(self.init_report.summary())
        super().__init__(
            teacher,
            student,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            ema_decay=ema_decay,
            nonfinite=nonfinite,
            seed=seed,
            gradient_checkpointing=gradient_checkpointing,
            channels_last=channels_last,
            compile_student=compile_student,
        )
        self.round_teacher = EMA(student, decay=0.0, warmup=False)  # a frozen student-sized copy
        self._ddp_params_and_buffers_to_ignore += [
            f"round_teacher.{k}" for k in self.round_teacher.state_dict()
        ]
        # plain ints (read every step without a device sync), written to and read from the checkpoint
        self.round_index = 0
        self.round_start = 0
        self.null_class = null_class_of(student, teacher.num_classes, argument="student")
        self.round_steps = round_steps
        self.promote = promote
        self.w_min, self.w_max = w_min, w_max
        self.evaluator = evaluator
        self.eval_num_samples = eval_num_samples
        self.eval_guidance = eval_guidance
        self.samples_per_class = samples_per_class
        self.eval_seed = eval_seed

    def setup(self, stage: str) -> None:
        super().setup(stage)
        check_data_matches(
            self.student, getattr(self.trainer, "datamodule", None), argument="student", teacher=self.teacher
        )

    # -- rounds --------------------------------------------------------------------------------------------
    @property
    def current_teacher_steps(self) -> int:
        return self.rounds[min(self.round_index, len(self.rounds) - 1)]

    @property
    def current_student_steps(self) -> int:
        return self.current_teacher_steps // 2

    @property
    def total_steps(self) -> int:
        return self.round_steps * len(self.rounds)

    def teacher_grid(self) -> torch.Tensor:
        return timestep_grid(
            num_inference_steps=self.current_teacher_steps,
            num_train_timesteps=self.teacher.schedule.num_train_timesteps,
            spacing="trailing",
        )

    def w_embedding(self, w: torch.Tensor) -> torch.Tensor | None:
        return (
            None if self.embed_dim is None else guidance_scale_embedding(w=w, dim=self.embed_dim).to(w.device)
        )

    @torch.no_grad()
    def _teacher_pred(self, z, t, labels, w, w_emb):
        if self.round_index == 0:
            guided = labels is not None and self.w_max > 0
            return self.teacher.predict(
                z.to(self.teacher.dtype), t, labels, guidance_scale=(1.0 + w) if guided else None
            )
        return denoise(self.round_teacher.module, self.teacher.schedule, z, t, labels, timestep_cond=w_emb)

    def training_losses(
        self, batch, rng: KeyedRandom | GeneratorRandom | None = None
    ) -> dict[str, torch.Tensor]:
        images, labels = self.prepare_batch(batch)
        b, device = images.shape[0], images.device
        schedule = self.teacher.schedule
        grid = self.teacher_grid().to(device)
        nxt = previous_timesteps(timesteps=grid)
        rng = self.train_random(b) if rng is None else rng
        j = 2 * rng.randint(len(grid) // 2, b)  # student steps start at even points
        s, mid, end = grid[j], nxt[j], nxt[j + 1]
        cond = labels
        w = self.w_min + (self.w_max - self.w_min) * rng.rand(b)
        w_emb = self.w_embedding(w)
        eps = rng.randn(images.shape, dtype=images.dtype)
        alpha_s, sigma_s = schedule.alpha_sigma(s, dtype=images.dtype)
        z_s = q_sample(x0=images, eps=eps, alpha=alpha_s, sigma=sigma_s)
        acp = schedule.alphas_cumprod.to(device)
        with torch.no_grad():
            p1 = self._teacher_pred(z_s, s, cond, w, w_emb)
            alpha_m, sigma_m = alpha_sigma(alphas_cumprod=acp, timesteps=mid)
            z_mid = ddim_step(
                x0=p1.x0.float(), eps=p1.eps.float(), alpha_next=alpha_m.float(), sigma_next=sigma_m.float()
            )
            p2 = self._teacher_pred(z_mid, mid.clamp(min=0), cond, w, w_emb)
            alpha_e, sigma_e = alpha_sigma(alphas_cumprod=acp, timesteps=end)
            z_end = ddim_step(
                x0=p2.x0.float(), eps=p2.eps.float(), alpha_next=alpha_e.float(), sigma_next=sigma_e.float()
            )
            target = progressive_x_target(
                z=z_s,
                z_end=z_end,
                alpha=alpha_s,
                sigma=sigma_s,
                alpha_end=alpha_e.float(),
                sigma_end=sigma_e.float(),
            )
        x_student = denoise(self.student, schedule, z_s, s, cond, timestep_cond=w_emb).x0
        weight = truncated_snr_weight(alpha=alpha_s, sigma=sigma_s)
        per_sample = (x_student.float() - target.float()).pow(2).flatten(1).mean(1)
        loss = (weight * per_sample).mean()
        return {
            "loss": loss,
            "round": torch.tensor(float(self.round_index)),
            "student_steps": torch.tensor(float(self.current_student_steps)),
        }

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
        if self.trainer.max_steps > 0 and self.trainer.max_steps < self.total_steps:
            rank_zero_info(
                f"max_steps={self.trainer.max_steps} stops before the last round ends ({len(self.rounds)} rounds x "
                f"{self.round_steps} steps = {self.total_steps})"
            )

    def export_schedule(self):
        """The teacher's schedule as a DDIMScheduler config on trailing spacing: the grid the student learned."""
        return self.teacher.schedule.with_config(
            _class_name="DDIMScheduler", timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False
        )

    # -- sampling and validation ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, labels, noise, *, steps: int | None = None, guidance: float = 0.0, net=None):
        """DDIM with the student on the trailing grid of ``steps`` (default: the current round's count)."""
        net = self.eval_student() if net is None else net
        steps = self.current_student_steps if steps is None else steps
        w_emb = self.w_embedding(torch.full((noise.shape[0],), float(guidance), device=noise.device))
        grid = timestep_grid(
            num_inference_steps=steps,
            num_train_timesteps=self.teacher.schedule.num_train_timesteps,
            spacing="trailing",
        )
        return ddim_sample(
            denoiser=partial(denoise, net, self.teacher.schedule, cond=labels, timestep_cond=w_emb),
            noise=noise,
            timesteps=grid.to(noise.device),
            alphas_cumprod=self.teacher.schedule.alphas_cumprod,
            clip_x0=1.0,
        )

    def _noise(self, n: int) -> torch.Tensor:
        return eval_noise(self.teacher, n, seed=self.eval_seed, device=self.device)

    def validation_step(self, batch, batch_idx: int) -> None:
        losses = self.training_losses(batch, rng=self.eval_random(batch_idx))
        self.log("val/loss", losses["loss"])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self.teacher.cond_kind == "text":
            return  # sample grids and the digits evaluator are class-conditional; text students: distill sample
        classes = self.teacher.num_classes or 1
        conditional = self.null_class is not None
        steps = self.current_student_steps
        self.log("val/student_steps", float(steps))
        if self.samples_per_class > 0:
            n = classes * self.samples_per_class
            labels = balanced_labels(n, classes, device=self.device) if conditional else None
            log_image(
                self,
                "samples/student_current_steps",
                image_grid(self.generate(labels, self._noise(n), guidance=self.eval_guidance), nrow=classes),
            )
        if self.evaluator is not None and self.eval_num_samples > 0:
            self.evaluator.to(self.device)
            n = self.eval_num_samples
            labels = balanced_labels(n, classes, device=self.device) if conditional else None
            metrics = evaluate_generator(
                self.evaluator,
                partial(self.generate, guidance=self.eval_guidance),
                noise=self._noise(n),
                labels=labels,
            )
            for key, value in metrics.items():
                self.log(f"val/{key}", value, prog_bar=key == "fid_real")
