"""The pruned-student search space (distill.search.space): candidates build as pruned_unet does, their MACs are
counted exactly, and the greedy step removes units by quality lost per MAC saved until the budget holds."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
from conftest import tiny_cond_unet

from distill.search.space import Candidate, action_order, candidate_macs, greedy_removal
from students.pruned import PrunedUNet2DConditionModel
from students.units import removable_units


def _report(teacher, deltas: dict[str, float]):
    """A report with the given quality changes and each unit's real MAC saving."""
    from distill.search.importance import unit_macs_saved

    units = removable_units(teacher)
    _, saved = unit_macs_saved(teacher, units)
    return SimpleNamespace(
        units=[
            SimpleNamespace(
                name=u.name,
                kind=u.kind,
                delta=deltas.get(u.name, 1.0),
                macs_saved=saved[u.name],
                latency_ms=None,
            )
            for u in units
        ]
    )


def test_a_candidate_builds_the_pruned_student_it_names():
    teacher = tiny_cond_unet(seed=0).config
    candidate = Candidate(("mid_block",), width=0.5, separable=True)
    kwargs = candidate.student_kwargs(teacher)
    assert kwargs["block_out_channels"] == [8, 16] and kwargs["norm_num_groups"] == 8
    network = candidate.build(teacher)
    assert isinstance(network, PrunedUNet2DConditionModel) and network.config.separable_convs
    assert list(network.config.removed_units) == ["mid_block"]
    assert candidate_macs(teacher, candidate) < candidate_macs(teacher, Candidate())


def test_greedy_removal_takes_the_cheapest_quality_per_mac_first_until_the_budget_holds():
    teacher = tiny_cond_unet(seed=0)
    names = [u.name for u in removable_units(teacher)]
    free = [n for n in names if n.startswith("up_blocks.")][:2]  # harmless to remove: taken first
    report = _report(teacher, {n: 0.0 for n in free})
    by_saving = sorted(free, key=lambda n: -next(u.macs_saved for u in report.units if u.name == n))
    assert [u.name for u in action_order(report)][:2] == by_saving
    full = candidate_macs(teacher.config, Candidate())
    budget = full - 0.5 * sum(u.macs_saved for u in report.units if u.name in free)
    result = greedy_removal(teacher.config, report, budget_macs=budget)
    assert result.candidate is not None and result.macs <= budget
    assert set(result.candidate.removed_units) <= set(free)
    assert result.predicted_delta == 0.0
    assert result.macs == pytest.approx(candidate_macs(teacher.config, result.candidate))
    # out of reach by removal alone: no candidate, every unit tried
    impossible = greedy_removal(teacher.config, report, budget_macs=0.01 * full)
    assert impossible.candidate is None and len(impossible.path) >= len(free)


def test_an_outer_unit_removed_later_takes_the_inner_ones_it_holds():
    """A cross-attention mid block (resnets and a transformer): its resnet goes first, then the whole block
    replaces it in the candidate."""
    import torch
    from diffusers import UNet2DConditionModel
    from test_units import TEXT_UNET

    torch.manual_seed(0)
    teacher = UNet2DConditionModel(**TEXT_UNET)
    report = _report(teacher, {"mid_block.resnets.0": 0.0, "mid_block": 1e-9})
    saved = {u.name: u.macs_saved for u in report.units}
    assert saved["mid_block"] > saved["mid_block.resnets.0"]
    full = candidate_macs(teacher.config, Candidate())
    result = greedy_removal(teacher.config, report, budget_macs=full - saved["mid_block"])
    assert [name for name, _ in result.path] == ["mid_block.resnets.0", "mid_block"]
    assert result.candidate.removed_units == ("mid_block",)
    assert result.predicted_delta == pytest.approx(1e-9)


def test_short_kd_trains_a_candidate_and_scores_it_the_same_way_for_every_candidate(tmp_path):
    from conftest import random_digits_loader, save_teacher_folder

    from distill.search.importance import SampleDistanceProxy
    from distill.search.trained import ShortKD
    from teachers import DiffusionTeacher

    save_teacher_folder(tmp_path / "teacher", tiny_cond_unet(seed=0))
    teacher = DiffusionTeacher.from_pretrained(tmp_path / "teacher")
    proxy = SampleDistanceProxy(num_samples=4, steps=2)
    proxy.reset(teacher)  # scored against the teacher's own samples
    short = ShortKD(teacher, lambda: random_digits_loader(16, batch_size=8), proxy, steps=2, lr=1e-3)
    whole = Candidate()
    first, again = short(whole), short(whole)
    assert first == again  # same seed, same data order: the same score
    assert 0 < first < 1.0  # two steps from the teacher's own weights: close to the teacher
    narrow = short(Candidate(("mid_block",), width=0.5))
    assert narrow > first  # half the channels from scratch after two steps: far from it
    with pytest.raises(ValueError, match="steps >= 1"):
        ShortKD(teacher, lambda: None, proxy, steps=0)


def test_search_scores_every_distinct_feasible_candidate_and_keeps_the_frontier():
    from distill.search.search import search

    teacher = tiny_cond_unet(seed=0)
    report = _report(teacher, {})
    full = candidate_macs(teacher.config, Candidate())
    scored = []

    def scorer(candidate):  # a stand-in score: more channels and fewer removals score better
        scored.append(candidate)
        return (
            (1 - candidate.width) + 0.1 * len(candidate.removed_units) + (0.05 if candidate.separable else 0)
        )

    result = search(teacher.config, report, budget_macs=0.5 * full, scorer=scorer, widths=(1.0, 0.5, 0.25))
    assert len(scored) == len(set(scored)) == len(result.entries) >= 2
    assert all(e.macs <= 0.5 * full for e in result.entries)
    assert all(e.macs == pytest.approx(candidate_macs(teacher.config, e.candidate)) for e in result.entries)
    assert result.best.score == min(e.score for e in result.entries)
    front = result.frontier()
    assert front[0].macs == min(e.macs for e in result.entries)
    assert all(b.macs >= a.macs and b.score < a.score for a, b in itertools.pairwise(front))
    record = result.to_dict()
    assert record["best"]["candidate"]["width"] == result.best.candidate.width
    with pytest.raises(ValueError, match="no candidate reaches"):
        search(teacher.config, report, budget_macs=1.0, scorer=scorer, widths=(1.0,))


def test_the_finalists_are_scored_again_and_the_best_is_chosen_by_the_refined_score():
    from distill.search.search import SearchResult, refine_finalists, search

    teacher = tiny_cond_unet(seed=0)
    report = _report(teacher, {})
    full = candidate_macs(teacher.config, Candidate())

    def first(candidate):  # a noisy first score: prefers the narrowest shape, plain convolutions on ties
        return candidate.width + 0.1 * len(candidate.removed_units) + (0.01 if candidate.separable else 0)

    refined = []

    def refine(candidate):  # the costlier score disagrees: prefers separable convolutions
        refined.append(candidate)
        return 1 - candidate.width + (0 if candidate.separable else 0.5)

    refine.name = "refined stand-in"
    kwargs = dict(budget_macs=0.5 * full, scorer=first, widths=(1.0, 0.5, 0.25))
    plain = search(teacher.config, report, **kwargs)
    result = search(teacher.config, report, **kwargs, refine=refine, finalists=2)
    assert len(result.entries) > 2  # only the two best by the first score were refined
    ranked = sorted(result.entries, key=lambda e: e.score)
    assert refined == [e.candidate for e in ranked[:2]]
    assert all(e.refined_score is None for e in ranked[2:])
    assert result.best is min(ranked[:2], key=lambda e: e.refined_score)
    assert result.best.candidate != plain.best.candidate  # the refined score changed the choice
    record = result.to_dict()
    assert record["refine_scorer"] == "refined stand-in"
    again = SearchResult.from_dict(record)
    assert again.to_dict() == record
    # a rerun continues: refined finalists are not scored again; one more finalist is
    refine_finalists(again, refine, finalists=3)
    assert len(refined) == 3 and refined[2] == ranked[2].candidate
    with pytest.raises(ValueError, match="finalists must be >= 1"):
        refine_finalists(again, refine, finalists=0)


def test_random_removal_is_seeded_and_reaches_the_budget_by_other_units():
    from distill.search.space import random_removal

    teacher = tiny_cond_unet(seed=0)
    names = [u.name for u in removable_units(teacher)]
    full = candidate_macs(teacher.config, Candidate())
    a = random_removal(teacher.config, names, budget_macs=0.8 * full, seed=1)
    assert a.candidate is not None and a.macs <= 0.8 * full
    assert random_removal(teacher.config, names, budget_macs=0.8 * full, seed=1).candidate == a.candidate
    others = {
        random_removal(teacher.config, names, budget_macs=0.8 * full, seed=s).candidate for s in range(2, 6)
    }
    assert len(others | {a.candidate}) > 1


def test_a_latency_budget_removes_by_measured_time_and_keeps_every_candidate_within_it():
    from distill.search.search import search
    from distill.search.space import candidate_latency

    teacher = tiny_cond_unet(seed=0)
    report = _report(teacher, {})
    with pytest.raises(ValueError, match="measure the report with latency"):
        action_order(report, cost="latency")
    for unit in report.units:
        unit.latency_ms = 0.1
    full = candidate_latency(teacher.config, Candidate())
    result = search(
        teacher.config,
        report,
        budget_latency_ms=0.8 * full,
        scorer=lambda c: 1 - c.width,
        widths=(1.0, 0.5, 0.25),
    )
    assert result.entries and all(
        e.latency_ms is not None and e.latency_ms <= 0.8 * full for e in result.entries
    )
    assert result.to_dict()["budget_latency_ms"] == pytest.approx(0.8 * full)
    with pytest.raises(ValueError, match="one budget"):
        search(teacher.config, report, budget_macs=1.0, budget_latency_ms=1.0, scorer=lambda c: 0.0)
