"""The shipped digits teacher: format, schedule, and that it really draws the digits it is asked for."""

from __future__ import annotations

import torch

from distill.methods.evaluation import GenerativeEvaluation
from distill.metrics import DigitsEvaluator
from teachers import DiffusionTeacher


def test_shipped_teacher_format():
    teacher = DiffusionTeacher.from_pretrained("builtin:digits")
    assert type(teacher.unet).__name__ == "UNet2DConditionModel"
    assert teacher.prediction_type == "v_prediction"
    assert teacher.schedule.config["beta_schedule"] == "squaredcos_cap_v2"
    assert teacher.schedule.timestep_spacing == "trailing"
    assert teacher.num_classes == 10 and teacher.null_class == 10
    assert (teacher.in_channels, teacher.sample_size) == (1, 16)
    assert sum(p.numel() for p in teacher.parameters()) == 2_357_857


def test_shipped_teacher_draws_the_requested_digits():
    teacher = DiffusionTeacher.from_pretrained("builtin:digits")
    evaluator = DigitsEvaluator(reference=None, kid_subset_size=50, kid_subsets=10)
    gen = GenerativeEvaluation(teacher, evaluator, steps=[4], guidance_scale=1.0)
    idx = torch.arange(100)
    images = gen.generate(torch.full_like(idx, 7), idx, idx % 10, 4)
    metrics = evaluator.accumulator()
    metrics.update(images, idx % 10)
    result = metrics.compute()
    assert result["accuracy"] >= 0.9
    assert images.min() >= -1 and images.max() <= 1
