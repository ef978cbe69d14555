"""Knowledge distillation (BK-SDM, Kim et al. 2023): task loss + output KD + feature KD
(:mod:`distill.objectives.knowledge`)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from distill.features import TransferReport, default_feature_pairs, transfer_weights
from distill.methods.base import DistillationModule
from distill.methods.checks import check_transformer_student
from distill.methods.ranges import check_finite, check_probability, check_time_density
from distill.objectives import FeatureKD, KnowledgeOptions, draw_noising, knowledge_distillation_loss
from distill.objectives.draws import guidance_w
from distill.rng import GeneratorRandom, KeyedRandom
from teachers.teacher import DiffusionTeacher
from teachers.transformer import takes_guidance


def check_compatible(teacher: DiffusionTeacher, student: nn.Module) -> None:
    """Teacher and student must agree on channels, sample size and conditioning; errors name the fix."""
    check_transformer_student(teacher, student)
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


def check_embedded_guidance(
    teacher: DiffusionTeacher, student: nn.Module, low: float | None, high: float | None
) -> tuple[float, float] | None:
    """The KD guidance range for a teacher that embeds the scale (FLUX-dev), refused for others; errors name the
    fix."""
    if low is None and high is None:
        return None
    if low is None or high is None:
        raise ValueError(
            "guidance_min and guidance_max come together (e.g. 1.0 and 5.0); set both or neither"
        )
    check_finite({"guidance_min": low, "guidance_max": high})
    if not 1.0 <= low <= high:
        raise ValueError(f"need 1 <= guidance_min <= guidance_max, got {low}, {high}")
    if not takes_guidance(teacher.unet):
        raise ValueError(
            "guidance_min/guidance_max: this teacher takes no guidance input (only FLUX-dev-style transformers "
            "embed the scale); KD students of CFG teachers keep guidance through cond_drop_prob. Remove them"
        )
    if not takes_guidance(student):
        raise ValueError(
            "guidance_min/guidance_max: the student has no guidance input to learn the teacher's scales with; build "
            "it with guidance_embeds (a depth-pruned FLUX-dev student keeps it)"
        )
    return float(low), float(high)


class KnowledgeDistillation(DistillationModule):
    """BK-SDM knowledge distillation: ``w_task * L_task + w_out * L_outKD + w_feat * sum_l L_featKD``.

    Validation samples the EMA student by DDIM (trailing spacing) with classifier-free guidance.

    Args:
        teacher: the frozen teacher.
        student: the student network (diffusers signature).
        feature_pairs: [teacher_module, student_module] names; None for the student builder's pairs
            (``student.student_info``, e.g. BK-Tiny's) or else BK-SDM's down/up block outputs present in both;
            [] for no feature KD.
        task_weight, output_weight, feature_weight: the loss weights (BK-SDM: 1, 1, 1).
        init_from_teacher: copy every teacher tensor whose name and shape match (a report is printed).
        init_mapping: student prefix -> teacher prefix for that copy (None: the builder's, e.g. BK-SDM's).
        cond_drop_prob: condition dropout to the null class / empty prompt, so the student keeps CFG.
        time_density, logit_mean, logit_std: how training times are drawn: "uniform" over the teacher's training
            timesteps, or "logit_normal" (SD3/FLUX's rectified-flow recipe: ``u = sigmoid(logit_mean + logit_std n)``,
            time index ``floor(u T)``), as ``DiffusionTraining``.
        guidance_min, guidance_max: for a teacher that takes the guidance scale as an input (FLUX-dev), the range
            each sample's scale is drawn from, given to teacher and student alike (None: the input is 1, no
            guidance); other teachers refuse it (they guide by CFG, which KD's students learn by dropout).
        **kwargs: the options every method shares (``DistillationModule``: optimizer, EMA, evaluation, ...).
    """

    default_eval_steps = (25,)
    default_eval_guidance_scale = 2.0

    def __init__(
        self,
        teacher: DiffusionTeacher,
        student: nn.Module,
        feature_pairs: list[tuple[str, str]] | None = None,
        task_weight: float = 1.0,
        output_weight: float = 1.0,
        feature_weight: float = 1.0,
        init_from_teacher: bool = True,
        init_mapping: dict[str, str] | None = None,
        cond_drop_prob: float = 0.1,
        time_density: str = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        guidance_min: float | None = None,
        guidance_max: float | None = None,
        **kwargs: Any,
    ) -> None:
        check_probability(cond_drop_prob, key="cond_drop_prob", example=0.1)
        check_time_density(time_density, logit_mean=logit_mean, logit_std=logit_std)
        guidance_range = check_embedded_guidance(teacher, student, guidance_min, guidance_max)
        check_finite(
            {"task_weight": task_weight, "output_weight": output_weight, "feature_weight": feature_weight}
        )
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
        super().__init__(teacher, student, **kwargs)
        self.options = KnowledgeOptions(
            task_weight=task_weight, output_weight=output_weight, feature_weight=feature_weight
        )
        pairs = default_feature_pairs(teacher.unet, student) if feature_pairs is None else feature_pairs
        self.feature_pairs = [] if feature_weight == 0 else [tuple(p) for p in pairs]
        if self.quantized and self.feature_pairs:
            raise ValueError(
                "quantize: feature KD reads the student's block outputs through module hooks, which a captured "
                "fake-quantized graph does not run; set feature_weight: 0 (output KD) for quantization-aware "
                "distillation"
            )
        self.features = FeatureKD(teacher.unet, student, self.feature_pairs, projections=None)
        self.projections = self.features.build_projections(teacher, student)
        self.features.projections = self.projections
        self.cond_drop_prob = cond_drop_prob
        self.guidance_range = guidance_range
        self.time_density, self.logit_mean, self.logit_std = time_density, logit_mean, logit_std

    def extra_trainable_modules(self) -> list[nn.Module]:
        return [self.projections]

    # -- training -----------------------------------------------------------------------------------------
    def training_losses(self, batch, rng: KeyedRandom | GeneratorRandom | None = None):
        x0, cond = self.prepare_batch(batch)
        rng = self.train_random(x0.shape[0]) if rng is None else rng
        draws = draw_noising(
            rng,
            x0=x0,
            schedule=self.teacher.schedule,
            cond=cond,
            cond_drop_prob=self.cond_drop_prob,
            density=self.time_density,
            logit_mean=self.logit_mean,
            logit_std=self.logit_std,
        )
        return knowledge_distillation_loss(
            teacher=self.teacher,
            student=self.student,
            x0=x0,
            cond=cond,
            draws=draws,
            options=self.options,
            features=self.features,
            guidance=self._guidance(rng, x0.shape[0]),
        )

    def _guidance(self, rng, batch: int) -> torch.Tensor | None:
        """Per-sample embedded guidance scales drawn after the noising draws (``rng`` None, at validation: the
        range's midpoint), or None without a range."""
        if self.guidance_range is None:
            return None
        low, high = self.guidance_range
        if rng is None:
            return torch.full((batch,), (low + high) / 2, device=self.device)
        return 1.0 + guidance_w(rng, batch=batch, scale_min=low, scale_max=high).to(self.device)

    def validation_step(self, batch, batch_idx: int) -> None:
        """The EMA student's task and output-KD losses on fixed draws, no condition dropped."""
        x0, cond = self.prepare_batch(batch)
        # no condition dropout: the dropout draw comes last, so times and noise are those of training's draw order
        draws = draw_noising(
            self.eval_random(batch_idx),
            x0=x0,
            schedule=self.teacher.schedule,
            cond=cond,
            cond_drop_prob=0.0,
            density=self.time_density,
            logit_mean=self.logit_mean,
            logit_std=self.logit_std,
        )
        losses = knowledge_distillation_loss(
            teacher=self.teacher,
            student=self.eval_student(),
            x0=x0,
            cond=cond,
            draws=draws,
            options=self.options,
            features=self.features,
            guidance=self._guidance(None, x0.shape[0]),
        )
        self.log("val/task", losses["task"])
        self.log("val/output_kd", losses["output_kd"], prog_bar=True)
