"""Knowledge distillation: loss terms, hooks, projections, teacher init, checkpoints, bad input."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import random_digits_loader, tiny_cond_unet

from distill.features import default_feature_pairs, transfer_weights
from distill.methods.knowledge import KnowledgeDistillation
from distill.objectives import draw_noising, knowledge_distillation_loss
from distill.rng import GeneratorRandom
from distill.validation import eval_noise
from teachers import DiffusionTeacher


def _loader(n=32):
    return random_digits_loader(n)


@pytest.fixture
def teacher(tiny_teacher_dir):
    return DiffusionTeacher.from_pretrained(tiny_teacher_dir)


def test_same_architecture_copies_everything_and_needs_no_projection(teacher):
    kd = KnowledgeDistillation(teacher, tiny_cond_unet(seed=5), samples_per_class=0)
    assert kd.init_report.copied_numel == kd.init_report.total_numel
    assert len(kd.projections) == 0
    assert kd.feature_pairs == [
        ("down_blocks.0", "down_blocks.0"),
        ("down_blocks.1", "down_blocks.1"),
        ("up_blocks.0", "up_blocks.0"),
        ("up_blocks.1", "up_blocks.1"),
    ]
    images, labels = next(iter(_loader()))
    losses = kd.training_losses((images, labels))
    # the student is the teacher's copy: output and feature KD vanish, the task loss does not
    assert losses["output_kd"] < 1e-10 and losses["feature_kd"] < 1e-10 and losses["task"] > 0.01


def test_narrow_student_gets_projections_and_a_partial_copy(teacher):
    student = tiny_cond_unet(seed=5, block_out_channels=[16, 16])
    kd = KnowledgeDistillation(teacher, student, samples_per_class=0)
    report = kd.init_report
    assert 0 < report.copied_numel < report.total_numel and report.shape_mismatch
    assert "conv_in.weight" in report.copied
    assert set(kd.projections) == {"down_blocks_1__down_blocks_1", "up_blocks_0__up_blocks_0"}
    proj = kd.projections["down_blocks_1__down_blocks_1"]
    assert (proj.in_channels, proj.out_channels) == (16, 32)
    trainable = {id(p) for p in kd.trainable_parameters()}
    assert {id(p) for p in kd.projections.parameters()} <= trainable
    assert not trainable & {id(p) for p in teacher.parameters()}
    losses = kd.training_losses(next(iter(_loader())))
    assert all(torch.isfinite(v) for v in losses.values()) and losses["feature_kd"] > 0
    losses["loss"].backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_weights_select_the_loss_terms(teacher):
    student = tiny_cond_unet(seed=5, block_out_channels=[16, 16])
    task_only = KnowledgeDistillation(
        teacher, student, output_weight=0, feature_weight=0, samples_per_class=0
    )
    assert task_only.feature_pairs == [] and len(task_only.projections) == 0
    batch = next(iter(_loader()))
    torch.manual_seed(0)
    losses = task_only.training_losses(batch)
    torch.testing.assert_close(losses["loss"], losses["task"])


def test_fit_lowers_the_kd_loss_and_checkpoints_projections_not_teacher(teacher, tmp_path):
    student = tiny_cond_unet(seed=5, block_out_channels=[16, 16])
    kd = KnowledgeDistillation(
        teacher,
        student,
        optimizer=lambda p: torch.optim.Adam(p, lr=3e-3),
        init_from_teacher=False,
        samples_per_class=0,
    )
    images, labels = next(iter(_loader()))

    def fixed_draw_kd_loss():  # the same noise and timesteps before and after training
        rng = GeneratorRandom(torch.Generator().manual_seed(0))
        draws = draw_noising(rng, x0=images, schedule=kd.teacher.schedule, cond=labels, cond_drop_prob=0.1)
        losses = knowledge_distillation_loss(
            teacher=kd.teacher,
            student=kd.student,
            x0=images,
            cond=labels,
            draws=draws,
            options=kd.options,
            features=kd.features,
        )
        return losses["output_kd"].item()

    before = fixed_draw_kd_loss()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_steps=30,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(kd, _loader())
    after = fixed_draw_kd_loss()
    assert after < 0.5 * before
    ckpt = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=False)
    keys = ckpt["state_dict"].keys()
    assert any(k.startswith("projections.") for k in keys)
    assert not any(k.startswith("teacher.") for k in keys)


def test_hooks_follow_names_on_the_unwrapped_student(teacher):
    kd = KnowledgeDistillation(
        teacher, tiny_cond_unet(seed=5, block_out_channels=[16, 16]), samples_per_class=0
    )

    class Wrapper(torch.nn.Module):  # what DDP/compile do: a new parent with a `module.` prefix
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, *a, **k):
            return self.module(*a, **k)

    wrapped = Wrapper(kd.student)
    z = torch.randn(2, 1, 8, 8)
    with kd.features.student.recording() as feats:
        wrapped(z, torch.tensor([1, 2]), encoder_hidden_states=None, class_labels=torch.tensor([0, 1]))
    assert set(feats) == {"down_blocks.0", "down_blocks.1", "up_blocks.0", "up_blocks.1"}


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"in_channels": 3}, r"student.in_channels=3 but the teacher's in_channels=1"),
        ({"sample_size": 16}, r"student.sample_size=16 but the teacher's sample_size=8"),
        ({"num_class_embeds": 5}, r"student.num_class_embeds=5 but the teacher's is 11"),
    ],
)
def test_mismatched_student_is_refused(teacher, overrides, match):
    with pytest.raises(ValueError, match=match):
        KnowledgeDistillation(teacher, tiny_cond_unet(seed=5, **overrides))


def test_unknown_feature_module_is_named(teacher):
    with pytest.raises(ValueError, match=r"'down_blocks\.7'.*does not exist.*down_blocks\.0"):
        KnowledgeDistillation(
            teacher, tiny_cond_unet(seed=5), feature_pairs=[("down_blocks.7", "down_blocks.0")]
        )


def test_transfer_with_a_prefix_mapping():
    src = tiny_cond_unet(seed=1)
    dst = tiny_cond_unet(seed=2)
    report = transfer_weights(source=src, target=dst, mapping={"up_blocks.0": "up_blocks.1"})
    # up_blocks.0 <- up_blocks.1 only where shapes agree; everything else copied by name
    assert torch.equal(dst.conv_in.weight, src.conv_in.weight)
    assert any(n.startswith("up_blocks.0") for n in report.shape_mismatch + report.copied)
    assert default_feature_pairs(src, dst)[0] == ("down_blocks.0", "down_blocks.0")


def test_student_exports_as_a_loadable_denoiser(teacher, tmp_path):
    kd = KnowledgeDistillation(
        teacher, tiny_cond_unet(seed=5, block_out_channels=[16, 16]), samples_per_class=0
    )
    kd.save_pretrained(tmp_path / "student")
    loaded = DiffusionTeacher.from_pretrained(tmp_path / "student")
    assert torch.equal(next(loaded.unet.parameters()), next(kd.ema.module.parameters()))
    assert loaded.schedule.config["prediction_type"] == teacher.prediction_type
    torch.testing.assert_close(loaded.schedule.alphas_cumprod, teacher.schedule.alphas_cumprod)
    assert not (tmp_path / "student" / "unet" / "projections").exists()


def test_validation_reuses_the_teacher_samples(teacher, tmp_path, monkeypatch):
    """The teacher's half of the validation grid (fixed noise and labels, frozen teacher) is sampled once; later
    validations reuse it, and what is reused is what the teacher would sample again."""
    kd = KnowledgeDistillation(
        teacher,
        tiny_cond_unet(seed=5, block_out_channels=[16, 16]),
        init_from_teacher=False,
        samples_per_class=1,
        eval_steps=[2],
        eval_teacher_steps=3,
    )
    calls = []
    sample = kd.teacher.sample
    monkeypatch.setattr(kd.teacher, "sample", lambda *a, **k: calls.append(1) or sample(*a, **k))
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_steps=6,
        val_check_interval=2,
        num_sanity_val_steps=0,
        logger=L.pytorch.loggers.TensorBoardLogger(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(kd, _loader(), _loader(8))
    assert len(calls) == 1  # three validations, one teacher sampling
    ((key, cached),) = kd._teacher_samples.items()
    assert key[:3] == ("grid", 10, 3)
    noise = eval_noise(kd.teacher, 10, seed=0, device="cpu")
    labels = torch.arange(10)
    fresh = sample(labels, noise, steps=3, guidance_scale=kd.eval_guidance_scale, sampler="ddim")
    torch.testing.assert_close(cached, fresh)
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent), size_guidance={"images": 0})
    acc.Reload()
    assert acc.Tags()["images"] == ["samples/teacher_3ddim_then_student_2step"]
    images = acc.Images("samples/teacher_3ddim_then_student_2step")
    assert len(images) == 3
    # two rows of ten 8x8 images with 1 px gaps (91 x 19) enlarged 8x (nearest), for 64 px images
    assert (images[-1].width, images[-1].height) == (8 * 91, 8 * 19)
