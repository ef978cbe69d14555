"""Knowledge distillation (BK-SDM, Kim et al. 2023): task loss + output KD + feature KD."""

from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from distill.features import FeatureRecorder, TransferReport, default_feature_pairs, transfer_weights
from distill.methods.base import DistillationModule
from distill.methods.common import (
    balanced_labels,
    check_data_matches,
    eval_noise,
    evaluate_generator,
    image_grid,
    log_image,
    null_class_of,
)
from distill.metrics import DigitsEvaluator
from distill.rng import GeneratorRandom, KeyedRandom
from teachers.network import call_denoiser, denoise
from teachers.parameterization import target_for
from teachers.sampling import ddim_sample_steps
from teachers.schedule import q_sample
from teachers.teacher import DiffusionTeacher


def _key(pair: tuple[str, str]) -> str:
    return re.sub(r"[^0-9a-zA-Z_]", "_", f"{pair[0]}__{pair[1]}")


def check_compatible(teacher: DiffusionTeacher, student: nn.Module) -> None:
    """Teacher and student must agree on channels, sample size and conditioning; errors name the fix."""
    t_cfg, s_cfg = teacher.unet.config, getattr(student, "config", None)
    if s_cfg is None:
        return
    for key in ("in_channels", "out_channels", "sample_size"):
        t_val, s_val = getattr(t_cfg, key, None), getattr(s_cfg, key, None)
        if t_val is not None and s_val is not None and t_val != s_val:
            raise ValueError(
                f"student.{key}={s_val} but the teacher's {key}={t_val}: set "
                f"--model.init_args.student.init_args.{key}={t_val}"
            )
    t_classes, s_classes = getattr(t_cfg, "num_class_embeds", None), getattr(s_cfg, "num_class_embeds", None)
    if t_classes != s_classes:
        raise ValueError(
            f"student.num_class_embeds={s_classes} but the teacher's is {t_classes} (classes + the null class): "
            f"set --model.init_args.student.init_args.num_class_embeds={t_classes}"
        )


class KnowledgeDistillation(DistillationModule):
    """BK-SDM knowledge distillation: ``w_task * L_task + w_out * L_outKD + w_feat * sum_l L_featKD``.

    Teacher and student see the same noisy input, timestep and (label-dropped) condition. The task loss regresses
    the schedule's target (v for a v-prediction teacher); output KD matches the teacher's output; feature KD
    matches the outputs of the named teacher/student modules (BK-SDM: ``down_blocks.i`` and ``up_blocks.i``),
    through trainable 1x1 projections where the widths differ. Hooks sit on the unwrapped networks, so DDP or
    compile wrappers never change the names.

    Args:
        teacher: the frozen teacher.
        student: the student network (diffusers signature).
        feature_pairs: [teacher_module, student_module] names; None for the student builder's pairs
            (``student.student_info``, e.g. BK-Tiny's) or else BK-SDM's down/up block outputs present in both;
            [] for no feature KD.
        task_weight, output_weight, feature_weight: the loss weights (BK-SDM: 1, 1, 1).
        init_from_teacher: copy every teacher tensor whose name and shape match (a report is printed).
        init_mapping: student prefix -> teacher prefix for that copy (None: the builder's, e.g. BK-SDM's).
        cond_drop_prob: label dropout to the null class, so the student keeps classifier-free guidance.
        evaluator: the digits evaluator for FID/KID/accuracy at validation (None: skip).
        eval_num_samples, eval_steps, eval_guidance: the validation evaluation (balanced labels, seed 0).
        samples_per_class: rows of the validation grid (teacher above, student below, same noise and labels).
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
        feature_pairs: list[tuple[str, str]] | None = None,
        task_weight: float = 1.0,
        output_weight: float = 1.0,
        feature_weight: float = 1.0,
        init_from_teacher: bool = True,
        init_mapping: dict[str, str] | None = None,
        cond_drop_prob: float = 0.1,
        evaluator: DigitsEvaluator | None = None,
        eval_num_samples: int = 500,
        eval_steps: int = 25,
        eval_guidance: float | None = 2.0,
        samples_per_class: int = 4,
        eval_seed: int = 0,
    ) -> None:
        check_compatible(teacher, student)
        info = getattr(student, "student_info", None)  # what a students/ builder knows about the pairing
        if init_mapping is None and info is not None:
            init_mapping = dict(info.init_mapping)
        if feature_pairs is None and info is not None and info.feature_pairs:
            feature_pairs = [tuple(p) for p in info.feature_pairs]
        self.init_report: TransferReport | None = None
        if init_from_teacher:
            self.init_report = transfer_weights(source=teacher.unet, target=student, mapping=init_mapping)
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
        for name, weight in (
            ("task_weight", task_weight),
            ("output_weight", output_weight),
            ("feature_weight", feature_weight),
        ):
            if weight < 0:
                raise ValueError(f"{name} must be >= 0, got {weight}")
        self.null_class = null_class_of(student, teacher.num_classes, argument="student")
        self.weights = {"task": task_weight, "output_kd": output_weight, "feature_kd": feature_weight}
        pairs = default_feature_pairs(teacher.unet, student) if feature_pairs is None else feature_pairs
        self.feature_pairs = [tuple(p) for p in pairs]
        if feature_weight == 0:
            self.feature_pairs = []
        self._teacher_features = FeatureRecorder(
            teacher.unet, [p[0] for p in self.feature_pairs], argument="feature_pairs (teacher side)"
        )
        self._student_features = FeatureRecorder(
            student, [p[1] for p in self.feature_pairs], argument="feature_pairs (student side)"
        )
        self.projections = nn.ModuleDict(self._build_projections())
        self.cond_drop_prob = cond_drop_prob
        self.evaluator = evaluator
        self.eval_num_samples = eval_num_samples
        self.eval_steps = eval_steps
        self.eval_guidance = eval_guidance
        self.samples_per_class = samples_per_class
        self.eval_seed = eval_seed

    # -- setup --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _build_projections(self) -> dict[str, nn.Module]:
        """Probe both networks once to learn the feature shapes; 1x1 convs where the widths differ."""
        if not self.feature_pairs:
            return {}
        t = self.teacher
        x = torch.zeros(1, t.in_channels, t.sample_size, t.sample_size)
        step = torch.tensor([500])
        cond = t.dummy_cond(1)
        with self._teacher_features.recording() as t_feats, self._student_features.recording() as s_feats:
            call_denoiser(t.unet, x.to(t.dtype), step, cond)
            was_training = self.student.training
            self.student.eval()
            call_denoiser(self.student, x, step, cond)
            self.student.train(was_training)
        projections = {}
        for pair in self.feature_pairs:
            t_shape, s_shape = t_feats[pair[0]].shape, s_feats[pair[1]].shape
            if t_shape[2:] != s_shape[2:]:
                raise ValueError(
                    f"feature pair {list(pair)}: teacher output {tuple(t_shape)} and student output "
                    f"{tuple(s_shape)} differ in spatial size; pair modules at the same resolution"
                )
            if t_shape[1] != s_shape[1]:
                projections[_key(pair)] = nn.Conv2d(s_shape[1], t_shape[1], kernel_size=1)
        return projections

    def setup(self, stage: str) -> None:
        super().setup(stage)
        check_data_matches(
            self.student, getattr(self.trainer, "datamodule", None), argument="student", teacher=self.teacher
        )

    def extra_trainable_modules(self) -> list[nn.Module]:
        return [self.projections]

    # -- training -----------------------------------------------------------------------------------------
    def _noisy_batch(self, images, cond, rng: KeyedRandom | GeneratorRandom):
        batch = images.shape[0]
        schedule = self.teacher.schedule
        t = rng.randint(schedule.num_train_timesteps, batch).to(images.device)
        eps = rng.randn(images.shape, dtype=images.dtype).to(images.device)
        alpha, sigma = schedule.alpha_sigma(t, dtype=images.dtype)
        z = q_sample(x0=images, eps=eps, alpha=alpha, sigma=sigma)
        target = target_for(
            prediction_type=schedule.prediction_type, x0=images, eps=eps, alpha=alpha, sigma=sigma
        )
        cond = self.drop_cond(cond, prob=self.cond_drop_prob, rng=rng)
        return z, t, cond, target

    def kd_losses(self, z, t, cond, target, student: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """The three loss terms and their weighted total for one noisy batch."""
        student = self.student if student is None else student
        with torch.no_grad(), self._teacher_features.recording() as t_feats:
            t_out = call_denoiser(self.teacher.unet, z.to(self.teacher.dtype), t, cond).float()
        with self._student_features.recording() as s_feats:
            s_out = call_denoiser(student, z, t, cond).float()
        losses = {"task": F.mse_loss(s_out, target.float()), "output_kd": F.mse_loss(s_out, t_out)}
        feat = s_out.new_zeros(())
        for pair in self.feature_pairs:
            s_feat = s_feats.get(pair[1])
            if s_feat is None:  # an evaluation copy (EMA) carries no hooks: feature KD is not measured there
                continue
            key = _key(pair)
            if key in self.projections:
                s_feat = self.projections[key](s_feat)
            feat = feat + F.mse_loss(s_feat.float(), t_feats[pair[0]].float())
        losses["feature_kd"] = feat
        losses["loss"] = sum(self.weights[k] * losses[k] for k in ("task", "output_kd", "feature_kd"))
        return losses

    def training_losses(
        self, batch, rng: KeyedRandom | GeneratorRandom | None = None
    ) -> dict[str, torch.Tensor]:
        x0, cond = self.prepare_batch(batch)
        rng = self.train_random(x0.shape[0]) if rng is None else rng
        return self.kd_losses(*self._noisy_batch(x0, cond, rng))

    # -- validation ---------------------------------------------------------------------------------------
    def validation_step(self, batch, batch_idx: int) -> None:
        x0, cond = self.prepare_batch(batch)
        # fixed draws; the same dropout draw as before, but no condition is dropped at validation
        rng = self.eval_random(batch_idx)
        z, t, _, target = self._noisy_batch(x0, cond, rng)
        with torch.no_grad():
            losses = self.kd_losses(z, t, cond, target, student=self.eval_student())
        self.log("val/task", losses["task"])
        self.log("val/output_kd", losses["output_kd"], prog_bar=True)

    @torch.no_grad()
    def generate(self, labels, noise, *, steps: int, guidance_scale: float | None, teacher: bool = False):
        """Samples from the EMA student (or the teacher) by DDIM with trailing spacing."""
        uncond = None if labels is None else torch.full_like(labels, self.null_class)
        if teacher:
            denoiser = partial(
                self.teacher.predict, cond=labels, guidance_scale=guidance_scale, uncond=uncond
            )
        else:
            denoiser = partial(
                denoise,
                self.eval_student(),
                self.teacher.schedule,
                cond=labels,
                guidance_scale=guidance_scale,
                uncond=uncond,
            )
        return ddim_sample_steps(
            denoiser=denoiser, noise=noise, schedule=self.teacher.schedule, steps=steps, clip_x0=1.0
        )

    def _noise(self, n: int) -> torch.Tensor:
        return eval_noise(self.teacher, n, seed=self.eval_seed, device=self.device)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self.teacher.cond_kind == "text":
            return  # sample grids and the digits evaluator are class-conditional; text students: distill sample
        classes = self.teacher.num_classes or 1
        guidance = self.eval_guidance if self.null_class is not None else None
        if self.samples_per_class > 0:
            n = classes * self.samples_per_class
            labels = balanced_labels(n, classes, device=self.device) if self.null_class is not None else None
            noise = self._noise(n)
            teacher_imgs = self.teacher_samples(
                ("grid", n, self.eval_steps, guidance, self.eval_seed),
                lambda: self.generate(
                    labels, noise, steps=self.eval_steps, guidance_scale=guidance, teacher=True
                ),
            )
            student_imgs = self.generate(labels, noise, steps=self.eval_steps, guidance_scale=guidance)
            log_image(
                self,
                "samples/teacher_top_student_bottom",
                image_grid(torch.cat([teacher_imgs, student_imgs]), nrow=classes),
            )
        if self.evaluator is not None and self.eval_num_samples > 0:
            self.evaluator.to(self.device)
            n = self.eval_num_samples
            labels = balanced_labels(n, classes, device=self.device) if self.null_class is not None else None
            metrics = evaluate_generator(
                self.evaluator,
                partial(self.generate, steps=self.eval_steps, guidance_scale=guidance),
                noise=self._noise(n),
                labels=labels,
            )
            for key, value in metrics.items():
                self.log(f"val/{key}", value, prog_bar=key in ("fid_real", "accuracy"))
