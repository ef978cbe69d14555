"""Unit importance (distill.search.importance): each unit's quality change by a proxy, and its cost."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from conftest import save_teacher_folder, tiny_cond_unet

from distill.flops import count_macs, example_inputs
from distill.search.importance import SampleDistanceProxy, measure_importance, network_macs, unit_latency
from students.pruned import pruned_unet
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
        assert unit.delta == unit.score > 0
        assert 0 < unit.macs_saved < report.total_macs
        assert unit.latency_ms > 0
    # checked against the network without the unit: a width-changing resnet (its shortcut stays), an attention,
    # the mid block (its resnets and attention go with it)
    shortcut = next(u for u in report.units if u.kind == "resnet" and u.name.startswith("up_blocks."))
    checked = [
        shortcut,
        *(next(u for u in report.units if u.kind == kind) for kind in ("attention", "mid_block")),
    ]
    for unit in checked:
        with skipping(tiny_teacher.unet, [unit.name]):
            assert proxy(tiny_teacher) == pytest.approx(unit.score)
        assert unit.macs_saved == pytest.approx(
            report.total_macs - network_macs(tiny_teacher.unet, [unit.name])
        )
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


def test_distill_prune_ranks_the_units_of_a_folder_and_writes_json(tiny_teacher, tmp_path, capsys):
    import json

    from distill.cli import main

    root = tmp_path / "teacher"
    save_teacher_folder(root, tiny_cond_unet(seed=2))
    out = tmp_path / "importance.json"
    args = ["--num-samples", "4", "--steps", "2", "--kinds", "attention", "mid_block", "--out", str(out)]
    main(["prune", "--model", str(root), *args])
    record = json.loads(out.read_text())
    names = [u.name for u in removable_units(tiny_teacher.unet, kinds=["attention", "mid_block"])]
    assert sorted(record["ranking"]) == sorted(names)
    assert record["proxy"].startswith("sample distance")  # auto: not a digits network
    assert {"commit", "date", "command"} <= set(record["meta"])
    printed = capsys.readouterr().out
    assert "| unit | kind | proxy change | MACs saved |" in printed and names[0] in printed
    with pytest.raises(SystemExit):
        main(["prune", "--model", str(root), "--proxy", "fid"])
    assert "--proxy fid scores digits samples" in capsys.readouterr().err


def test_distill_prune_measures_a_text_to_image_pipeline(tiny_sd, tmp_path, one_torch_thread):
    """A tiny SD pipeline: cross-attention transformers are units, scored by the distance proxy on prompts."""
    import json

    from distill.cli import main

    pipeline, _ = tiny_sd
    out = tmp_path / "sd.json"
    sizes = ["--num-samples", "2", "--steps", "2", "--prompts", "a red square"]
    main(["prune", "--model", str(pipeline), *sizes, "--kinds", "attention", "--out", str(out)])
    record = json.loads(out.read_text())
    assert record["units"] and all(u["kind"] == "attention" for u in record["units"])
    assert all(".attentions." in u["name"] for u in record["units"])
    assert all(u["delta"] > 0 and u["macs_saved"] > 0 for u in record["units"])
    # the search on the same pipeline: a student config at half the UNet's MACs
    config = tmp_path / "sd_student.yaml"
    search = ["--budget-macs", "0.5", "--widths", "1.0", "0.5", "--out-config", str(config)]
    main(["prune", "--model", str(pipeline), "--importance", str(out), *search])
    import yaml

    args = yaml.safe_load(config.read_text())["init_args"]
    built = pruned_unet(**args)
    full = count_macs(DiffusionTeacher.from_pretrained(pipeline).unet, example_inputs(built)).total
    assert count_macs(built, example_inputs(built)).total <= 0.5 * full


def test_distill_prune_searches_under_a_budget_and_writes_a_student_config_a_method_takes(tmp_path, capsys):
    """--budget-macs: the importance report (measured, then reused with --importance), every shape's candidate
    under the budget, the best written as a pruned_unet config that `distill fit` parses as the student."""
    import json

    import yaml

    from distill.cli import main
    from distill.search.space import Candidate, candidate_macs

    root = tmp_path / "teacher"
    save_teacher_folder(root, tiny_cond_unet(seed=2))
    report = tmp_path / "importance.json"
    main(["prune", "--model", str(root), "--num-samples", "2", "--steps", "2", "--out", str(report)])
    config = tmp_path / "student.yaml"
    search = ["--budget-macs", "0.3", "--scorer", "predicted", "--widths", "1.0", "0.5", "0.25"]
    board = tmp_path / "board"
    plot = tmp_path / "frontier.png"
    outputs = ["--out-config", str(config), "--tensorboard", str(board), "--plot", str(plot)]
    main(["prune", "--model", str(root), "--importance", str(report), *search, *outputs])
    printed = capsys.readouterr().out
    assert "| width | separable | units removed |" in printed and "chosen:" in printed
    student = yaml.safe_load(config.read_text())
    assert student["class_path"] == "students.pruned.pruned_unet"
    args = student["init_args"]
    candidate = Candidate(tuple(args["removed_units"]), separable=args["separable_convs"])
    full = candidate_macs(str(root), Candidate())
    built = pruned_unet(**args)

    assert count_macs(built, example_inputs(built)).total <= 0.3 * full
    assert candidate.removed_units == tuple(args["removed_units"])
    assert json.loads(report.read_text())["units"]
    # the frontier and the importance table, read back from the event file
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(board), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scores = acc.Scalars("search/score")
    front = acc.Scalars("search/frontier")
    assert len(scores) >= len(front) >= 1
    assert [e.step for e in scores] == sorted(e.step for e in scores)
    assert all(a.value > b.value for a, b in itertools.pairwise(front))  # cheaper points score worse
    assert len(acc.Scalars("prune/quality_change_by_rank")) == len(json.loads(report.read_text())["units"])
    assert {"prune/importance/text_summary", "search/candidates/text_summary"} <= set(acc.Tags()["tensors"])
    assert acc.Tags()["images"] == ["search/frontier_plot"]  # the plot as a TensorBoard figure
    from PIL import Image

    with Image.open(plot) as image:  # and as a file
        assert image.format == "PNG" and image.width > 300
    # a method takes it as its student
    with pytest.raises(SystemExit) as info:
        kd = Path(__file__).resolve().parents[1] / "configs" / "digits" / "kd.yaml"
        main(["fit", "-c", str(kd), f"--model.init_args.student={config}", "--print_config"])
    assert info.value.code == 0
    assert "students.pruned.pruned_unet" in capsys.readouterr().out
    # a latency budget: the units timed, every candidate measured against a fraction of the teacher's latency
    timed = ["--budget-latency", "0.9", "--scorer", "predicted", "--widths", "1.0", "0.5", "0.25"]
    main(["prune", "--model", str(root), "--num-samples", "2", "--steps", "2", *timed])
    assert "ms per batch-1 forward" in capsys.readouterr().out
    for bad, message in (
        (["--budget-macs", "1.5"], "in \\(0, 1\\]"),
        (["--budget-macs", "0.5", "--budget-latency", "0.5"], "not allowed with argument"),
        (["--out-config", str(tmp_path / "x.yaml")], "pass --budget-macs"),
        (["--plot", str(tmp_path / "x.png")], "pass --budget-macs"),
        (["--budget-macs", "0.3", "--finalists", "-1"], "--finalists is a count >= 0"),
        (
            ["--budget-macs", "0.3", "--scorer", "short-kd", "--importance", str(report)],
            "short-kd trains on the digits",
        ),
    ):
        with pytest.raises(SystemExit):
            main(["prune", "--model", str(root), *bad])
        assert re.search(message, capsys.readouterr().err), bad
