"""Unit importance (distill.search.importance): each unit's quality change by a proxy, and its cost."""

from __future__ import annotations

import pytest
from conftest import save_teacher_folder, tiny_cond_unet

from distill.search.importance import SampleDistanceProxy, measure_importance, network_macs, unit_latency
from students.units import removable_units, skipping
from teachers import DiffusionTeacher


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("importance") / "teacher"
    save_teacher_folder(root, tiny_cond_unet(seed=2))
    return DiffusionTeacher.from_pretrained(root)


def test_each_unit_is_scored_by_skipping_it_and_costed_by_what_removing_it_saves(tiny_teacher):
    proxy = SampleDistanceProxy(num_samples=6, steps=3)
    report = measure_importance(tiny_teacher, proxy, latency=True, repeats=3)
    units = removable_units(tiny_teacher.unet)
    assert [u.name for u in report.units] == [u.name for u in units]
    assert report.base_score == 0.0  # the full network against its own samples
    for unit in report.units:
        with skipping(tiny_teacher.unet, [unit.name]):
            assert proxy(tiny_teacher) == pytest.approx(unit.score)  # the score of the network without it
        assert unit.delta == unit.score > 0
        assert 0 < unit.macs_saved < report.total_macs
        assert unit.latency_ms > 0
    # MACs saved are additive for disjoint leaf units (the counter agrees with itself)
    a, b = [u for u in report.units if u.kind == "resnet"][:2]
    both = report.total_macs - network_macs(tiny_teacher.unet, [a.name, b.name])
    assert both == pytest.approx(a.macs_saved + b.macs_saved)
    assert report.ranking()[0] == min(report.units, key=lambda u: u.delta).name
    assert report.latency_total_ms > max(u.latency_ms for u in report.units)
    assert not any("forward" in vars(m) for m in tiny_teacher.unet.modules())


def test_importance_of_named_units_only_and_refusals(tiny_teacher):
    names = [u.name for u in removable_units(tiny_teacher.unet, kinds=["attention"])]
    report = measure_importance(tiny_teacher, SampleDistanceProxy(num_samples=2, steps=2), units=names)
    assert [u.name for u in report.units] == names
    with pytest.raises(ValueError, match="not removable units"):
        measure_importance(tiny_teacher, SampleDistanceProxy(num_samples=2, steps=2), units=["conv_in"])
    with pytest.raises(ValueError, match="num_samples >= 1"):
        SampleDistanceProxy(num_samples=0)


def test_unit_latency_times_each_unit_inside_the_forward(tiny_teacher):
    units = removable_units(tiny_teacher.unet)
    timing = unit_latency(tiny_teacher.unet, units, repeats=3, warmup=1)
    assert set(timing["units"]) == {u.name for u in units}
    nested = timing["units"]["mid_block"]  # the mid block holds its resnets: its time covers theirs
    inner = [timing["units"][u.name] for u in units if u.name.startswith("mid_block.")]
    assert nested >= max(inner)
