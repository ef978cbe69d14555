"""Each method's loss as a pure function (NVlabs/edm's ``loss.py`` in spirit): ``(teacher, student, clean batch,
condition, draws, options) -> {name: loss}``, with no Lightning in it.

The LightningModules in :mod:`distill.methods` prepare the batch, draw the keyed randomness
(:mod:`distill.objectives.draws`) and call these; benchmarks and tests call the same functions.
"""

from distill.objectives.consistency import (
    ConsistencyDraws,
    ConsistencyOptions,
    consistency_distillation_loss,
    consistency_function,
    draw_consistency,
    teacher_solver_step,
    w_embedding,
)
from distill.objectives.denoising import denoising_loss
from distill.objectives.draws import NoisingDraws, apply_keep, draw_keep, draw_noising, guidance_w
from distill.objectives.knowledge import FeatureKD, KnowledgeOptions, knowledge_distillation_loss, pair_key
from distill.objectives.progressive import (
    ProgressiveDraws,
    ProgressiveOptions,
    draw_progressive,
    progressive_distillation_loss,
)
from distill.objectives.trajectory import (
    TrajectoryDraws,
    TrajectoryOptions,
    draw_trajectory,
    trajectory_matching_loss,
)

__all__ = [
    "ConsistencyDraws",
    "ConsistencyOptions",
    "FeatureKD",
    "KnowledgeOptions",
    "NoisingDraws",
    "ProgressiveDraws",
    "ProgressiveOptions",
    "TrajectoryDraws",
    "TrajectoryOptions",
    "apply_keep",
    "consistency_distillation_loss",
    "consistency_function",
    "denoising_loss",
    "draw_consistency",
    "draw_keep",
    "draw_noising",
    "draw_progressive",
    "draw_trajectory",
    "guidance_w",
    "knowledge_distillation_loss",
    "pair_key",
    "progressive_distillation_loss",
    "teacher_solver_step",
    "trajectory_matching_loss",
    "w_embedding",
]
