"""Consistency distillation (Song et al. 2023) as Latent Consistency Models do it (Luo et al. 2023), for any
student, so architecture and step distillation happen in one run.

One training step, on a clean batch x0:
  1. pick n uniformly on the skipping grid (``k = T // original_steps``): start ``s = (n + 1) k - 1`` and
     target time ``t = s - k`` (clamped at 0);
  2. draw guidance ``w ~ U[w_min, w_max]`` (LCM's form: ``cond + w (cond - uncond)``, i.e. the usual scale
     ``1 + w``) and embed it for the student's ``timestep_cond``;
  3. noise ``z_s = alpha_s x0 + sigma_s eps``; the student's consistency output
     ``f(z_s, s) = c_skip(s) z_s + c_out(s) x0_student(z_s, s, w)``;
  4. one DDIM step of the frozen teacher with CFG at scale ``1 + w`` from s to t (under no_grad);
  5. the target ``f_target(z_t, t)`` from the EMA target network (no_grad);
  6. loss: pseudo-Huber (elementwise, c = 0.001, as diffusers' LCM script) or L2.
After every optimizer step the target network moves towards the student (``target_decay``; LCM 0.95); the
evaluation EMA (``ema_decay``) is what validation and export use. Both are in the checkpoint.
"""

from __future__ import annotations

from functools import partial

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from distill.ema import EMA
from distill.features import transfer_weights
from distill.losses import CONSISTENCY_LOSSES, consistency_loss
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
    consistency_output,
    consistency_scalings,
    ddim_step,
    guidance_scale_embedding,
)
from teachers.sampling import consistency_sample, ddim_sample_steps
from teachers.schedule import lcm_skipping_timesteps, lcm_timesteps, q_sample
from teachers.teacher import DiffusionTeacher


class ConsistencyDistillation(DistillationModule):
    """Latent-consistency-style distillation of a teacher into a few-step student.

    Args:
        teacher: the frozen teacher.
        student: the student network; with ``w_max > w_min`` it needs a ``timestep_cond`` input of width
            ``time_cond_proj_dim`` (diffusers UNets and TimmUNet take it) for the guidance embedding.
        original_steps: the skipping grid's size (LCM: 50 of 1000 timesteps, k = 20).
        w_min, w_max: range of LCM-form guidance ``w`` (teacher CFG scale ``1 + w``); equal values fix it.
        target_decay: EMA rate of the target network (LCM: 0.95).
        loss: "huber" (elementwise pseudo-Huber, LCM) or "l2".
        huber_c: the pseudo-Huber c (LCM: 0.001).
        sigma_data, timestep_scaling: boundary scalings (LCMScheduler: 0.5 and 10).
        init_from_teacher: copy teacher tensors where names and shapes match (LCM starts from the teacher).
        cond_drop_prob: label dropout for the student's own conditioning (0: none, as LCM).
        evaluator, eval_num_samples, eval_steps, eval_guidance: validation at 1/2/4 consistency steps.
        samples_per_class: rows per class of the validation grid (teacher 25 DDIM steps, then each step count).
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
        original_steps: int = 50,
        w_min: float = 0.0,
        w_max: float = 0.0,
        target_decay: float = 0.95,
        loss: str = "huber",
        huber_c: float = 0.001,
        sigma_data: float = 0.5,
        timestep_scaling: float = 10.0,
        init_from_teacher: bool = True,
        cond_drop_prob: float = 0.0,
        evaluator: DigitsEvaluator | None = None,
        eval_num_samples: int = 500,
        eval_steps: list[int] | None = None,
        eval_guidance: float = 0.0,
        samples_per_class: int = 2,
        eval_seed: int = 0,
    ) -> None:
        schedule = teacher.schedule
        if loss not in CONSISTENCY_LOSSES:
            raise ValueError(f"loss must be one of {CONSISTENCY_LOSSES}, got {loss!r}")
        if not 1 <= original_steps <= schedule.num_train_timesteps:
            raise ValueError(
                f"original_steps must be in [1, {schedule.num_train_timesteps}] (the teacher's timesteps), got "
                f"{original_steps}"
            )
        if schedule.num_train_timesteps % original_steps:
            raise ValueError(
                f"original_steps={original_steps} does not divide the teacher's {schedule.num_train_timesteps} "
                f"timesteps, so the skipping interval k is not whole; pick a divisor (e.g. 50 for 1000)"
            )
        if not 0.0 <= target_decay < 1.0:
            raise ValueError(f"target_decay must be in [0, 1), got {target_decay}")
        self.embed_dim = check_guidance(
            teacher,
            student,
            w_min=w_min,
            w_max=w_max,
            eval_guidance=eval_guidance,
            input_needed=w_max > w_min,
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
        self.target = EMA(student, decay=target_decay, warmup=False)
        self._ddp_params_and_buffers_to_ignore += [f"target.{k}" for k in self.target.state_dict()]
        self.null_class = null_class_of(student, teacher.num_classes, argument="student")
        self.original_steps = original_steps
        self.k = schedule.num_train_timesteps // original_steps
        self.register_buffer(
            "solver_timesteps",
            lcm_skipping_timesteps(
                num_train_timesteps=schedule.num_train_timesteps, original_steps=original_steps
            ),
            persistent=False,
        )
        self.w_min, self.w_max = w_min, w_max
        self.loss_kind, self.huber_c = loss, huber_c
        self.sigma_data, self.timestep_scaling = sigma_data, timestep_scaling
        self.cond_drop_prob = cond_drop_prob
        self.evaluator = evaluator
        self.eval_num_samples = eval_num_samples
        self.eval_steps = [1, 2, 4] if eval_steps is None else list(eval_steps)
        self.eval_guidance = eval_guidance
        self.samples_per_class = samples_per_class
        self.eval_seed = eval_seed

    def setup(self, stage: str) -> None:
        super().setup(stage)
        check_data_matches(
            self.student, getattr(self.trainer, "datamodule", None), argument="student", teacher=self.teacher
        )

    # -- pieces -------------------------------------------------------------------------------------------
    def w_embedding(self, w: torch.Tensor) -> torch.Tensor | None:
        return (
            None if self.embed_dim is None else guidance_scale_embedding(w=w, dim=self.embed_dim).to(w.device)
        )

    def consistency_fn(self, net: nn.Module, z: torch.Tensor, t: torch.Tensor, cond, w_emb) -> torch.Tensor:
        """``f(z, t) = c_skip z + c_out x0_net(z, t)`` for a student-shaped network."""
        x0 = denoise(net, self.teacher.schedule, z, t, cond, timestep_cond=w_emb).x0
        c_skip, c_out = consistency_scalings(
            timesteps=t, sigma_data=self.sigma_data, timestep_scaling=self.timestep_scaling
        )
        return consistency_output(z=z, x0=x0, c_skip=c_skip, c_out=c_out)

    @torch.no_grad()
    def teacher_solver_step(self, z_s, s, t, cond, w) -> torch.Tensor:
        """One DDIM step of the teacher from ``s`` to ``t`` with CFG at scale ``1 + w`` (per sample)."""
        guided = cond is not None and self.w_max > 0
        pred = self.teacher.predict(
            z_s.to(self.teacher.dtype), s, cond, guidance_scale=(1.0 + w) if guided else None
        )
        alpha_t, sigma_t = self.teacher.schedule.alpha_sigma(t, dtype=z_s.dtype)
        return ddim_step(
            x0=pred.x0.to(z_s.dtype), eps=pred.eps.to(z_s.dtype), alpha_next=alpha_t, sigma_next=sigma_t
        )

    def training_losses(
        self, batch, rng: KeyedRandom | GeneratorRandom | None = None
    ) -> dict[str, torch.Tensor]:
        images, labels = self.prepare_batch(batch)
        b, device = images.shape[0], images.device
        rng = self.train_random(b) if rng is None else rng
        index = rng.randint(self.original_steps, b)
        s = self.solver_timesteps.to(device)[index]
        t = (s - self.k).clamp(min=0)
        w = self.w_min + (self.w_max - self.w_min) * rng.rand(b)
        w_emb = self.w_embedding(w)
        cond = self.drop_cond(labels, prob=self.cond_drop_prob, rng=rng)
        eps = rng.randn(images.shape, dtype=images.dtype)
        alpha_s, sigma_s = self.teacher.schedule.alpha_sigma(s, dtype=images.dtype)
        z_s = q_sample(x0=images, eps=eps, alpha=alpha_s, sigma=sigma_s)
        pred = self.consistency_fn(self.student, z_s, s, cond, w_emb)
        z_t = self.teacher_solver_step(z_s, s, t, labels, w)
        with torch.no_grad():
            target = self.consistency_fn(self.target.module, z_t, t, cond, w_emb)
        loss = consistency_loss(pred, target, kind=self.loss_kind, huber_c=self.huber_c)
        return {"loss": loss, "consistency": loss.detach()}

    def after_step(self, steps_done: int) -> None:
        super().after_step(steps_done)
        self.target.update(self.student)

    def export_schedule(self):
        """The teacher's schedule as an LCMScheduler config with this run's skipping grid and scalings."""
        if self.sigma_data != 0.5:
            raise ValueError(
                f"LCMScheduler fixes sigma_data = 0.5; this run used {self.sigma_data}, which no diffusers scheduler "
                "config can express"
            )
        return self.teacher.schedule.with_config(
            _class_name="LCMScheduler",
            original_inference_steps=self.original_steps,
            timestep_scaling=self.timestep_scaling,
            timestep_spacing="leading",
            clip_sample=False,
        )

    # -- sampling and validation ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, labels, noise, *, steps: int, guidance: float = 0.0, net: nn.Module | None = None):
        """Multistep consistency sampling of the EMA student at LCM's timesteps for ``steps`` steps, with
        LCM-form guidance ``guidance`` fed through ``timestep_cond`` (one forward per step)."""
        net = self.eval_student() if net is None else net
        w_emb = self.w_embedding(torch.full((noise.shape[0],), float(guidance), device=noise.device))
        denoiser = partial(denoise, net, self.teacher.schedule, cond=labels, timestep_cond=w_emb)
        timesteps = lcm_timesteps(
            num_train_timesteps=self.teacher.schedule.num_train_timesteps,
            num_inference_steps=steps,
            original_steps=self.original_steps,
        )
        gen = torch.Generator().manual_seed(self.eval_seed + 17)
        return consistency_sample(
            denoiser=denoiser,
            noise=noise,
            timesteps=timesteps.to(noise.device),
            alphas_cumprod=self.teacher.schedule.alphas_cumprod,
            step_noise=lambda i: torch.randn(noise.shape, generator=gen).to(noise.device),
            sigma_data=self.sigma_data,
            timestep_scaling=self.timestep_scaling,
            clip_x0=1.0,
        )

    def _noise(self, n: int) -> torch.Tensor:
        return eval_noise(self.teacher, n, seed=self.eval_seed, device=self.device)

    def validation_step(self, batch, batch_idx: int) -> None:
        losses = self.training_losses(batch, rng=self.eval_random(batch_idx))
        self.log("val/consistency", losses["loss"])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self.teacher.cond_kind == "text":
            return  # sample grids and the digits evaluator are class-conditional; text students: distill sample
        classes = self.teacher.num_classes or 1
        conditional = self.null_class is not None
        if self.samples_per_class > 0:
            n = classes * self.samples_per_class
            labels = balanced_labels(n, classes, device=self.device) if conditional else None
            noise = self._noise(n)
            teacher_scale = 1.0 + self.eval_guidance if conditional and self.eval_guidance > 0 else None
            rows = [
                self.teacher_samples(
                    ("grid", n, 25, teacher_scale, self.eval_seed),
                    lambda: ddim_sample_steps(
                        denoiser=partial(self.teacher.predict, cond=labels, guidance_scale=teacher_scale),
                        noise=noise,
                        schedule=self.teacher.schedule,
                        steps=25,
                    ),
                )
            ]
            rows += [
                self.generate(labels, noise, steps=k, guidance=self.eval_guidance) for k in self.eval_steps
            ]
            tag = "samples/teacher_25ddim_then_student_" + "_".join(f"{k}step" for k in self.eval_steps)
            log_image(self, tag, image_grid(torch.cat(rows), nrow=classes))
        if self.evaluator is not None and self.eval_num_samples > 0:
            self.evaluator.to(self.device)
            n = self.eval_num_samples
            labels = balanced_labels(n, classes, device=self.device) if conditional else None
            for k in self.eval_steps:
                metrics = evaluate_generator(
                    self.evaluator,
                    partial(self._generate_for_eval, steps=k),
                    noise=self._noise(n),
                    labels=labels,
                )
                for key, value in metrics.items():
                    self.log(f"val/{k}step/{key}", value, prog_bar=k == 1 and key == "fid_real")

    def _generate_for_eval(self, labels, noise, *, steps: int):
        return self.generate(labels, noise, steps=steps, guidance=self.eval_guidance)
