"""Half-precision paths: the teacher held in bf16/fp16 and the student under autocast, the loss math in fp32."""

from __future__ import annotations

import pytest
import torch
from conftest import cpu_trainer, random_digits_loader, tiny_cond_unet

from distill.methods.consistency import ConsistencyDistillation
from distill.methods.knowledge import KnowledgeDistillation
from distill.methods.progressive import ProgressiveDistillation
from teachers import DiffusionTeacher

METHODS = {
    "kd": lambda t: KnowledgeDistillation(
        t, tiny_cond_unet(seed=3), init_from_teacher=False, samples_per_class=0
    ),
    "progressive": lambda t: ProgressiveDistillation(
        t, tiny_cond_unet(seed=3), teacher_steps=8, final_steps=1, round_steps=2, samples_per_class=0
    ),
    "consistency": lambda t: ConsistencyDistillation(
        t, tiny_cond_unet(seed=3, time_cond_proj_dim=8), guidance_max=3.0, samples_per_class=0
    ),
}


# bf16 teacher with the student under bf16 autocast (CPU's mixed precision), and an fp16 teacher beside an fp32
# student (CPU has no fp16 autocast; on GPU the fp16 teacher pairs with precision="16-mixed")
@pytest.mark.parametrize("teacher_dtype, autocast", [(torch.bfloat16, True), (torch.float16, False)])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_losses_are_fp32_with_a_half_teacher(method, teacher_dtype, autocast, tiny_teacher_dir):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir, dtype=teacher_dtype)
    assert next(teacher.unet.parameters()).dtype == teacher_dtype
    module = METHODS[method](teacher)
    images, labels = next(iter(random_digits_loader(16)))
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        losses = module.training_losses((images, labels))
    for name, value in losses.items():
        if value.is_floating_point() and name not in ("round", "student_steps"):
            assert value.dtype == torch.float32, (name, value.dtype)
            assert torch.isfinite(value), name
    losses["loss"].backward()
    grads = [p.grad for p in module.student.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 for g in grads), (
        "fp32 master weights get fp32 grads"
    )
    assert all(p.grad is None for p in module.teacher.parameters())


@pytest.mark.parametrize("method", sorted(METHODS))
def test_bf16_mixed_training_steps_keep_fp32_weights(method, tiny_teacher_dir):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir, dtype=torch.bfloat16)
    module = METHODS[method](teacher)
    before = [p.detach().clone() for p in module.student.parameters()]
    cpu_trainer(2, precision="bf16-mixed").fit(module, random_digits_loader(32))
    after = list(module.student.parameters())
    assert all(p.dtype == torch.float32 for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)), "the student did not train"
    assert all(torch.isfinite(p).all() for p in after)


def test_channels_last_student_trains_to_the_same_loss(tiny_teacher_dir):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    plain = METHODS["kd"](teacher)
    fast = KnowledgeDistillation(
        teacher, tiny_cond_unet(seed=3), init_from_teacher=False, samples_per_class=0, channels_last=True
    )
    conv = next(
        m for m in fast.student.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    )
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    images, labels = next(iter(random_digits_loader(16)))
    from distill.rng import GeneratorRandom

    losses = [
        m.training_losses((images, labels), rng=GeneratorRandom(torch.Generator().manual_seed(0)))["loss"]
        for m in (plain, fast)
    ]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_compiled_student_keeps_its_names_hooks_and_loss(tiny_teacher_dir):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    module = KnowledgeDistillation(
        teacher, tiny_cond_unet(seed=3), init_from_teacher=False, samples_per_class=0, compile_student=True
    )
    keys = set(module.state_dict())
    cpu_trainer(2).fit(module, random_digits_loader(32))
    assert module._compiled and set(module.state_dict()) == keys  # no _orig_mod prefixes
    images, labels = next(iter(random_digits_loader(16)))
    from distill.rng import GeneratorRandom

    losses = module.training_losses((images, labels), rng=GeneratorRandom(torch.Generator().manual_seed(0)))
    assert torch.isfinite(losses["loss"]) and float(losses["feature_kd"]) > 0, (
        "feature hooks fire when compiled"
    )
