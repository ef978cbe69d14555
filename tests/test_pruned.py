"""The pruned student (students.pruned): the teacher without some units, built from a config, loading the teacher's
weights by name, computing what the teacher computes with those units skipped, saved and reloaded exactly."""

from __future__ import annotations

import pytest
import torch
from conftest import save_teacher_folder, tiny_cond_unet

from students import create_student
from students.loading import load_student
from students.pruned import PrunedUNet2DConditionModel, pruned_unet
from students.units import Passthrough, ShortcutResnet, removable_units, skipping
from teachers.network import call_denoiser

REMOVED = ["down_blocks.0.resnets.0", "up_blocks.0.resnets.1", "mid_block"]


def _out(network):
    gen = torch.Generator().manual_seed(1)
    sample = torch.randn(3, 1, 8, 8, generator=gen)
    with torch.no_grad():
        return call_denoiser(
            network.eval(), sample, torch.tensor([5.0, 400.0, 950.0]), torch.tensor([0, 5, 9])
        )


def test_a_pruned_student_with_the_teachers_weights_is_the_teacher_without_those_units(tmp_path):
    teacher = tiny_cond_unet(seed=4)
    attention = next(u.name for u in removable_units(teacher) if u.kind == "attention")
    removed = [*REMOVED, attention]
    student = pruned_unet(teacher, removed_units=removed)
    assert isinstance(student, PrunedUNet2DConditionModel)
    result = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not result.missing_keys  # every kept weight (shortcuts included) has the teacher's name
    assert all(k.startswith(tuple(removed)) for k in result.unexpected_keys)
    with skipping(teacher, removed):
        expected = _out(teacher)
    torch.testing.assert_close(_out(student), expected, atol=1e-6, rtol=1e-6)
    assert isinstance(student.down_blocks[0].resnets[0], ShortcutResnet)
    assert isinstance(student.mid_block, Passthrough)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())

    # saved and reloaded from the config alone (the registry's loader), weights and all
    save_teacher_folder(tmp_path / "export", student)
    loaded = load_student(tmp_path / "export")
    assert type(loaded) is PrunedUNet2DConditionModel and list(loaded.config.removed_units) == removed
    torch.testing.assert_close(_out(loaded), expected, atol=1e-6, rtol=1e-6)


def test_narrower_separable_pruned_students_and_refusals():
    teacher = tiny_cond_unet(seed=4)
    student = create_student(
        "pruned_unet",
        teacher=teacher,
        removed_units=REMOVED[:1],
        block_out_channels=[8, 16],
        separable_convs=True,
    )
    assert list(student.config.block_out_channels) == [8, 16] and student.config.separable_convs
    assert _out(student).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="not removable units"):
        pruned_unet(teacher, removed_units=["conv_in"])
    with pytest.raises(ValueError, match="lies inside mid_block"):
        pruned_unet(teacher, removed_units=["mid_block", "mid_block.resnets.0"])
    with pytest.raises(ValueError, match="one per stage"):
        pruned_unet(teacher, block_out_channels=[8])
    with pytest.raises(ValueError, match="must divide by norm_num_groups"):
        pruned_unet(teacher, block_out_channels=[12, 16])
