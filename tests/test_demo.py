"""`make demo` end to end at a tiny budget: the KD run, the teacher-vs-student table, the files it names."""

from __future__ import annotations

import glob

import pytest
import torch

from distill import demo
from teachers import DiffusionTeacher


def test_demo_trains_evaluates_and_writes_what_it_prints(tmp_path, capsys):
    demo.main(["--steps", "2", "--eval-samples", "20", "--eval-steps", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    run = tmp_path / "kd" / "version_0"
    assert "| parameters | 2.36M | 1.02M (0.43x) |" in out
    assert "| MACs per forward | 88.7M | 60.4M (0.68x) |" in out
    for row in ("FID vs real digits", "FID vs teacher reference", "class accuracy"):
        assert f"| {row}" in out
    for path in (run / "checkpoints" / "last.ckpt", run / "student", run / "teacher_top_student_bottom.png"):
        assert str(path) in out and path.exists()
    # the exported student loads as a denoiser and is the EMA student of the checkpoint
    student = DiffusionTeacher.from_pretrained(run / "student")
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
    ema = {
        k.removeprefix("ema.module."): v
        for k, v in state["state_dict"].items()
        if k.startswith("ema.module.")
    }
    for name, value in student.unet.state_dict().items():
        torch.testing.assert_close(value, ema[name], rtol=0, atol=0)
    # TensorBoard holds the training losses and the final numbers of both models
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, float] = {}
    for events in glob.glob(str(run / "events.out.tfevents.*")):
        acc = EventAccumulator(events, size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            tags[tag] = acc.Scalars(tag)[-1].value
    for role in ("teacher", "student"):
        for key in ("fid_real", "fid_ref", "accuracy"):
            assert f"demo/{role}/{key}" in tags
    assert tags["demo/teacher/accuracy"] >= 0.5  # the shipped teacher is good even at one DDIM step
    assert "val/task" in tags and "val/output_kd" in tags


@pytest.mark.parametrize("flag", ["--steps", "--eval-samples", "--eval-steps"])
def test_demo_rejects_non_positive_budgets(flag, capsys):
    with pytest.raises(SystemExit):
        demo.main([flag, "0"])
    assert f"{flag} must be >= 1" in capsys.readouterr().err
