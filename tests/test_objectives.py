"""The objectives as pure functions, without a Trainer or a LightningModule: each checked against its formula on
the tiny teacher, and the draws checked to be a fixed function of the keyed source."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_cond_unet
from torch import nn

from distill.losses import pseudo_huber
from distill.objectives import (
    ConsistencyOptions,
    FeatureKD,
    KnowledgeOptions,
    NoisingDraws,
    ProgressiveOptions,
    consistency_distillation_loss,
    denoising_loss,
    draw_consistency,
    draw_noising,
    draw_progressive,
    knowledge_distillation_loss,
    progressive_distillation_loss,
)
from distill.objectives.consistency import ConsistencyDraws
from distill.objectives.progressive import ProgressiveDraws
from distill.rng import KeyedRandom
from teachers import DiffusionTeacher
from teachers.parameterization import ddim_step, target_for
from teachers.schedule import q_sample, snr


@pytest.fixture
def teacher(tiny_teacher_dir):
    return DiffusionTeacher.from_pretrained(tiny_teacher_dir)


def _batch(n=4):
    gen = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=gen) * 2 - 1, torch.arange(n) % 10


def test_draws_are_a_fixed_function_of_the_keys_whatever_the_split(teacher):
    x0, labels = _batch(4)
    whole = draw_noising(
        KeyedRandom(seed=3, step=7, indices=[0, 1, 2, 3]),
        x0=x0,
        schedule=teacher.schedule,
        cond=labels,
        cond_drop_prob=0.5,
    )
    halves = [
        draw_noising(
            KeyedRandom(seed=3, step=7, indices=idx),
            x0=x0[idx],
            schedule=teacher.schedule,
            cond=labels[idx],
            cond_drop_prob=0.5,
        )
        for idx in ([0, 1], [2, 3])
    ]
    assert torch.equal(whole.t, torch.cat([h.t for h in halves]))
    assert torch.equal(whole.noise, torch.cat([h.noise for h in halves]))
    assert torch.equal(whole.keep, torch.cat([h.keep for h in halves]))
    assert (
        draw_noising(
            KeyedRandom(seed=3, step=7, indices=[0, 1, 2, 3]),
            x0=x0,
            schedule=teacher.schedule,
            cond=None,
            cond_drop_prob=0.5,
        ).keep
        is None
    )  # no condition, nothing to drop, nothing drawn


def test_knowledge_distillation_of_the_teacher_into_itself_has_zero_kd_terms(teacher):
    x0, labels = _batch()
    student = copy.deepcopy(teacher.unet).float().requires_grad_(True)
    pairs = [("down_blocks.0", "down_blocks.0"), ("up_blocks.1", "up_blocks.1")]
    features = FeatureKD(teacher.unet, student, pairs, projections=nn.ModuleDict())
    assert len(features.build_projections(teacher, student)) == 0  # equal widths: no projections
    draws = NoisingDraws(t=torch.tensor([10, 300, 600, 999]), noise=torch.randn_like(x0))
    losses = knowledge_distillation_loss(
        teacher=teacher,
        student=student,
        x0=x0,
        cond=labels,
        draws=draws,
        options=KnowledgeOptions(task_weight=1.0, output_weight=2.0, feature_weight=3.0),
        features=features,
    )
    assert float(losses["output_kd"]) == 0.0 and float(losses["feature_kd"]) == 0.0
    alpha, sigma = teacher.schedule.alpha_sigma(draws.t)
    z = q_sample(x0=x0, eps=draws.noise, alpha=alpha, sigma=sigma)
    target = target_for(prediction_type="v_prediction", x0=x0, eps=draws.noise, alpha=alpha, sigma=sigma)
    with torch.no_grad():
        out = teacher.unet(z, draws.t, encoder_hidden_states=None, class_labels=labels).sample
    torch.testing.assert_close(losses["task"], F.mse_loss(out, target))
    torch.testing.assert_close(losses["loss"], losses["task"])
    losses["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_knowledge_options_refuse_negative_weights():
    with pytest.raises(ValueError, match="feature_weight must be >= 0"):
        KnowledgeOptions(feature_weight=-1.0)


def test_consistency_loss_at_the_boundary_is_the_distance_to_the_teachers_ddim_step(teacher):
    """With t = 0 the target network's consistency function is the identity, so the loss is the pseudo-Huber
    distance between the student's f(z_s, s) and the teacher's DDIM step from s to 0."""
    x0, labels = _batch()
    student = tiny_cond_unet(seed=4, time_cond_proj_dim=8)
    options = ConsistencyOptions(guided=True, embed_dim=8)
    w = torch.tensor([0.0, 0.5, 1.0, 2.0])
    draws = ConsistencyDraws(
        s=torch.full((4,), 19), t=torch.zeros(4, dtype=torch.long), w=w, keep=None, noise=torch.randn_like(x0)
    )
    losses = consistency_distillation_loss(
        teacher=teacher,
        student=student,
        target=copy.deepcopy(student),
        x0=x0,
        cond=labels,
        draws=draws,
        options=options,
    )
    from distill.objectives import consistency_function, w_embedding

    alpha, sigma = teacher.schedule.alpha_sigma(draws.s)
    z_s = q_sample(x0=x0, eps=draws.noise, alpha=alpha, sigma=sigma)
    pred = consistency_function(student, teacher.schedule, z_s, draws.s, labels, w_embedding(w, 8), options)
    guided = teacher.predict(z_s, draws.s, labels, guidance_scale=1.0 + w)
    a0, s0 = teacher.schedule.alpha_sigma(draws.t)
    expected = pseudo_huber(
        pred, ddim_step(x0=guided.x0, eps=guided.eps, alpha_next=a0, sigma_next=s0), c=0.001
    )
    torch.testing.assert_close(losses["loss"], expected)
    assert losses["consistency"].requires_grad is False


def test_consistency_draws_pair_each_solver_point_with_the_one_before(teacher):
    x0, labels = _batch(8)
    grid = teacher.schedule.skipping_grid(50)
    draws = draw_consistency(
        KeyedRandom(seed=0, step=0, indices=range(8)),
        x0=x0,
        solver_grid=grid,
        guidance_min=1.0,
        guidance_max=3.0,
        cond=labels,
        cond_drop_prob=0.0,
    )
    assert torch.equal(draws.t, (draws.s - 20).clamp(min=0))  # k = 1000 / 50
    assert ((draws.w >= 0) & (draws.w <= 2)).all()  # LCM's w = scale - 1 for scales in [1, 3]


def test_progressive_target_on_the_last_step_is_the_teachers_second_x0(teacher):
    """Round 1, two teacher steps ending at clean data: the x-target is the second step's x0-prediction, weighted
    by the truncated SNR of the start."""
    x0, labels = _batch()
    student = tiny_cond_unet(seed=5)
    grid = teacher.schedule.grid(2, spacing="trailing")  # [999, 499] -> clean
    draws = ProgressiveDraws(
        start=torch.zeros(4, dtype=torch.long), w=torch.zeros(4), noise=torch.randn_like(x0)
    )
    losses = progressive_distillation_loss(
        teacher=teacher,
        student=student,
        x0=x0,
        cond=labels,
        draws=draws,
        grid=grid,
        options=ProgressiveOptions(),
    )
    s = torch.full((4,), 999)
    alpha, sigma = teacher.schedule.alpha_sigma(s)
    z = q_sample(x0=x0, eps=draws.noise, alpha=alpha, sigma=sigma)
    p1 = teacher.predict(z, s, labels)
    a_m, s_m = teacher.schedule.alpha_sigma(torch.full((4,), 499))
    p2 = teacher.predict(
        ddim_step(x0=p1.x0, eps=p1.eps, alpha_next=a_m, sigma_next=s_m), torch.full((4,), 499), labels
    )
    with torch.no_grad():
        from teachers.network import denoise

        x_student = denoise(student, teacher.schedule, z, s, labels).x0
    weight = torch.clamp(alpha**2 / sigma**2, min=1.0)
    expected = (weight * (x_student - p2.x0).pow(2).flatten(1).mean(1)).mean()
    torch.testing.assert_close(losses["loss"], expected, rtol=1e-5, atol=1e-7)
    more = draw_progressive(
        KeyedRandom(seed=0, step=0, indices=range(4)),
        x0=x0,
        grid=teacher.schedule.grid(8, spacing="trailing"),
        guidance_min=1.0,
        guidance_max=1.0,
    )
    assert (more.start % 2 == 0).all() and (more.start < 8).all() and (more.w == 0).all()


def test_denoising_loss_with_min_snr_weights_each_sample(teacher):
    x0, labels = _batch()
    net = tiny_cond_unet(seed=6)
    draws = NoisingDraws(t=torch.tensor([5, 250, 500, 990]), noise=torch.randn_like(x0))
    plain = denoising_loss(net=net, schedule=teacher.schedule, x0=x0, cond=labels, draws=draws)["loss"]
    weighted = denoising_loss(
        net=net, schedule=teacher.schedule, x0=x0, cond=labels, draws=draws, min_snr_gamma=5.0
    )["loss"]
    alpha, sigma = teacher.schedule.alpha_sigma(draws.t)
    z = q_sample(x0=x0, eps=draws.noise, alpha=alpha, sigma=sigma)
    target = target_for(prediction_type="v_prediction", x0=x0, eps=draws.noise, alpha=alpha, sigma=sigma)
    with torch.no_grad():
        per = (net(z, draws.t, encoder_hidden_states=None, class_labels=labels).sample - target).pow(2)
    per = per.flatten(1).mean(1)
    s = snr(alpha=alpha, sigma=sigma)
    torch.testing.assert_close(plain, per.mean())
    torch.testing.assert_close(weighted, (per * s.clamp(max=5.0) / (s + 1)).mean())
