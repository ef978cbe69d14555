"""Knowledge distillation's objective (BK-SDM, Kim et al. 2023): task loss + output KD + feature KD.

Teacher and student see the same noisy input, time and (dropped-out) condition. The task loss regresses the
schedule's target (v for a v-prediction teacher); output KD matches the teacher's output; feature KD matches the
outputs of paired teacher/student modules through trainable 1x1 projections where the widths differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distill.features import FeatureRecorder
from distill.objectives.draws import NoisingDraws, apply_keep
from teachers.conditioning import Cond
from teachers.network import call_denoiser
from teachers.parameterization import target_for
from teachers.schedule import q_sample


@dataclass(frozen=True)
class KnowledgeOptions:
    """The loss weights (BK-SDM: 1, 1, 1)."""

    task_weight: float = 1.0
    output_weight: float = 1.0
    feature_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("task_weight", "output_weight", "feature_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def pair_key(pair: tuple[str, str]) -> str:
    """The projection's name for a (teacher module, student module) pair."""
    return re.sub(r"[^0-9a-zA-Z_]", "_", f"{pair[0]}__{pair[1]}")


class FeatureKD:
    """Feature KD's state: forward hooks on both networks' paired modules and the 1x1 projections (owned and
    trained by the method, passed in here). Hooks sit on the unwrapped networks, so DDP or compile wrappers never
    change the names."""

    def __init__(
        self,
        teacher_net: nn.Module,
        student: nn.Module,
        pairs: list[tuple[str, str]],
        projections: nn.ModuleDict,
    ) -> None:
        self.pairs = [tuple(p) for p in pairs]
        self.teacher = FeatureRecorder(
            teacher_net, [p[0] for p in self.pairs], argument="feature_pairs (teacher side)"
        )
        self.student = FeatureRecorder(
            student, [p[1] for p in self.pairs], argument="feature_pairs (student side)"
        )
        self.projections = projections

    @torch.no_grad()
    def build_projections(self, teacher, student: nn.Module) -> nn.ModuleDict:
        """Probe both networks once for the feature shapes; 1x1 convs where the widths differ."""
        if not self.pairs:
            return nn.ModuleDict()
        x = torch.zeros(1, teacher.in_channels, teacher.sample_size, teacher.sample_size)
        step = torch.tensor([500])
        cond = teacher.dummy_cond(1)
        with self.teacher.recording() as t_feats, self.student.recording() as s_feats:
            call_denoiser(teacher.unet, x.to(teacher.dtype), step, cond)
            was_training = student.training
            student.eval()
            call_denoiser(student, x, step, cond)
            student.train(was_training)
        projections = {}
        for pair in self.pairs:
            t_shape, s_shape = t_feats[pair[0]].shape, s_feats[pair[1]].shape
            if t_shape[2:] != s_shape[2:]:
                raise ValueError(
                    f"feature pair {list(pair)}: teacher output {tuple(t_shape)} and student output "
                    f"{tuple(s_shape)} differ in spatial size; pair modules at the same resolution"
                )
            if t_shape[1] != s_shape[1]:
                projections[pair_key(pair)] = nn.Conv2d(s_shape[1], t_shape[1], kernel_size=1)
        return nn.ModuleDict(projections)


def knowledge_distillation_loss(
    *,
    teacher,
    student: nn.Module,
    x0: torch.Tensor,
    cond: Cond,
    draws: NoisingDraws,
    options: KnowledgeOptions,
    features: FeatureKD | None = None,
    guidance: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``{"task", "output_kd", "feature_kd", "loss"}`` for one batch; ``loss`` is the weighted total.
    ``guidance`` (B,): the guidance scale both networks take as an input (FLUX-dev's embedded guidance).

    The teacher runs under ``no_grad``. A ``student`` other than the one ``features`` hooks (an EMA copy at
    validation) carries no hooks: its feature KD is not measured (0).
    """
    schedule = teacher.schedule
    alpha, sigma = schedule.alpha_sigma(draws.t, dtype=x0.dtype)
    z = q_sample(x0=x0, eps=draws.noise, alpha=alpha, sigma=sigma)
    target = target_for(
        prediction_type=schedule.prediction_type, x0=x0, eps=draws.noise, alpha=alpha, sigma=sigma
    )
    cond = apply_keep(cond, draws.keep, null_cond=teacher.null_cond)
    pairs = features.pairs if features is not None else []
    t_rec = features.teacher.recording() if features is not None else _no_recording()
    s_rec = features.student.recording() if features is not None else _no_recording()
    with torch.no_grad(), t_rec as t_feats:
        t_out = call_denoiser(teacher.unet, z.to(teacher.dtype), draws.t, cond, guidance=guidance).float()
    with s_rec as s_feats:
        s_out = call_denoiser(student, z, draws.t, cond, guidance=guidance).float()
    losses = {"task": F.mse_loss(s_out, target.float()), "output_kd": F.mse_loss(s_out, t_out)}
    feat = s_out.new_zeros(())
    for pair in pairs:
        s_feat = s_feats.get(pair[1])
        if s_feat is None:
            continue
        key = pair_key(pair)
        if key in features.projections:
            s_feat = features.projections[key](s_feat)
        feat = feat + F.mse_loss(s_feat.float(), t_feats[pair[0]].float())
    losses["feature_kd"] = feat
    weights = {
        "task": options.task_weight,
        "output_kd": options.output_weight,
        "feature_kd": options.feature_weight,
    }
    losses["loss"] = sum(weights[k] * losses[k] for k in ("task", "output_kd", "feature_kd"))
    return losses


class _no_recording:
    def __enter__(self) -> dict:
        return {}

    def __exit__(self, *exc) -> None:
        return None
