"""`make demo` end to end at a tiny budget: the KD run, the teacher-vs-student table, the files it names."""

from __future__ import annotations

import glob

import pytest
import torch

from distill import demo
from teachers import DiffusionTeacher


@pytest.mark.slow  # the whole demo end to end (make test-slow); its parts have fast tests of their own
def test_demo_trains_evaluates_and_writes_what_it_prints(tmp_path, capsys):
    demo.main(
        [
            "--steps",
            "2",
            "--eval-samples",
            "20",
            "--teacher-steps",
            "2",
            "--student-steps",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    run = tmp_path / "consistency" / "version_0"
    # MACs per sample = MACs per forward x steps (88.7M teacher, 9.2M student, one forward per step each)
    assert "| teacher, DDIM 2 steps | 177M |" in out
    assert "| student, 1-step consistency | 9M |" in out
    assert "no distillation" not in out  # the 4-step teacher row only appears when it differs from the first
    for path in (run / "checkpoints" / "last.ckpt", run / "student", run / "samples.png"):
        assert str(path) in out and path.exists()
    # the exported student is the EMA student of the checkpoint and carries the LCM scheduler
    student = DiffusionTeacher.from_pretrained(run / "student")
    assert student.schedule.scheduler_class == "LCMScheduler"
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
    ema = {
        k.removeprefix("ema.module."): v
        for k, v in state["state_dict"].items()
        if k.startswith("ema.module.")
    }
    for name, value in student.unet.state_dict().items():
        torch.testing.assert_close(value, ema[name], rtol=0, atol=0)
    # TensorBoard holds the training losses and the final numbers of every row
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, float] = {}
    for events in glob.glob(str(run / "events.out.tfevents.*")):
        acc = EventAccumulator(events, size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            tags[tag] = acc.Scalars(tag)[-1].value
    for row in ("teacher_2step", "student_1step"):
        for key in ("fid_real", "fid_ref", "accuracy"):
            assert f"demo/{row}/{key}" in tags
    assert tags["demo/teacher_2step/accuracy"] >= 0.5  # the shipped teacher is good even at two DDIM steps
    # the shipped KD student is the starting point: one consistency step already draws the asked-for digits
    assert tags["demo/student_1step/accuracy"] >= 0.5
    assert any(tag.startswith("train/") for tag in tags)
    # demo.json holds what the table printed (README's demo table is rendered from a committed copy of it)
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import tables

    result = json.loads((run / "demo.json").read_text())
    assert str(run / "demo.json") in out
    assert [r["label"] for r in result["rows"]] == ["teacher, DDIM 2 steps", "student, 1-step consistency"]
    assert result["meta"]["command"].startswith("python -m distill.demo --steps 2")
    for line in tables.demo(result).splitlines():
        if line.startswith("|"):
            assert line in out


def test_demo_rows_put_the_teacher_first():
    rows = demo.rows_to_run(25, [4, 1])
    assert [(role, steps) for _, role, steps in rows] == [
        ("teacher", 25),
        ("teacher", 4),
        ("student", 4),
        ("student", 1),
    ]


@pytest.mark.parametrize("flag", ["--steps", "--eval-samples", "--teacher-steps"])
def test_demo_rejects_non_positive_budgets(flag, capsys):
    with pytest.raises(SystemExit):
        demo.main([flag, "0"])
    assert f"{flag} must be >= 1" in capsys.readouterr().err
