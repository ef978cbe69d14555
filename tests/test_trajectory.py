"""Trajectory distillation: the objective replays every call a sampler's network received on the student; the
method pulls a student (a float copy, or its int8 fake-quantized copy) onto its teacher's trajectories; bad input is
refused before training."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import SCHEDULER, cpu_trainer, random_digits_loader, tiny_cond_unet
from diffusers import LCMScheduler

from distill.objectives.trajectory import (
    TrajectoryOptions,
    draw_trajectory,
    record_trajectory,
    trajectory_matching_loss,
)
from distill.rng import GeneratorRandom, KeyedRandom
from teachers import DiffusionTeacher


def _consistency_teacher(tmp_path, **unet_options) -> DiffusionTeacher:
    """A tiny class-conditional network in a folder whose scheduler is an LCMScheduler (multistep consistency
    sampling with re-noising between steps, as a shipped consistency student samples)."""
    path = tmp_path / "teacher"
    tiny_cond_unet(seed=0, **unet_options).save_pretrained(path / "unet")
    LCMScheduler(**SCHEDULER).save_pretrained(path / "scheduler")
    return DiffusionTeacher.from_pretrained(path)


def _draws(steps, batch=4, seed=0):
    return draw_trajectory(
        GeneratorRandom(torch.Generator().manual_seed(seed)), batch=batch, shape=(1, 8, 8), steps=steps
    )


def _record(teacher, labels, draws, *, steps):
    """The teacher's network calls along the trajectory from ``draws``' first starting noise."""
    return record_trajectory(
        teacher,
        cond=labels,
        noise=draws.noise[0],
        steps=steps,
        guidance_scale=1.0,
        seeds=draws.seeds,
        indices=torch.arange(len(labels)),
    )


def test_recorded_calls_are_the_samplers_own_and_replay_exactly(tmp_path):
    teacher = _consistency_teacher(tmp_path)
    labels = torch.tensor([0, 3, 7, 9])
    draws = _draws([3])
    calls = _record(teacher, labels, draws, steps=3)
    assert len(calls) == 3  # one network call per consistency step, no guidance batch
    timesteps = [int(c.args[1].flatten()[0]) for c in calls]
    assert timesteps == sorted(timesteps, reverse=True) and len(set(timesteps)) == 3
    assert torch.equal(calls[0].args[0], draws.noise[0])  # the trajectory starts at the drawn noise
    # later inputs come from the sampler's own outputs (re-noised): not the starting noise
    assert not torch.allclose(calls[1].args[0], draws.noise[0])
    with torch.no_grad():
        for call in calls:
            assert torch.equal(call.kwargs["class_labels"], labels)
            replay = teacher.unet(*call.args, **call.kwargs).sample
            assert torch.equal(replay, call.output)
    # keyed: the same draws give the same trajectory, another seed another one
    again = _record(teacher, labels, draws, steps=3)
    assert all(torch.equal(a.args[0], b.args[0]) for a, b in zip(calls, again, strict=True))
    other = _draws([3], seed=1)
    assert not torch.equal(other.noise[0], draws.noise[0]) and not torch.equal(other.seeds, draws.seeds)


def test_the_loss_is_zero_for_the_teachers_copy_and_trains_only_the_student(tmp_path):
    teacher = _consistency_teacher(tmp_path)
    labels = torch.tensor([1, 2, 5, 8])
    draws = _draws([1, 2, 4])
    same = trajectory_matching_loss(
        teacher=teacher,
        student=copy.deepcopy(teacher.unet),
        cond=labels,
        draws=draws,
        options=TrajectoryOptions(steps=(1, 2, 4)),
    )
    assert set(same) == {"loss", "steps_1", "steps_2", "steps_4"}
    assert float(same["loss"]) == 0.0

    student = tiny_cond_unet(seed=1)
    out = trajectory_matching_loss(
        teacher=teacher, student=student, cond=labels, draws=draws, options=TrajectoryOptions(steps=(1, 2, 4))
    )
    assert float(out["loss"].detach()) > 0
    # the loss is the mean over all 7 calls: a call-weighted mean of the per-step-count means
    expected = (out["steps_1"] * 1 + out["steps_2"] * 2 + out["steps_4"] * 4) / 7
    torch.testing.assert_close(out["loss"].detach(), expected)
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.unet.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())

    one = _draws([1])
    huber = trajectory_matching_loss(
        teacher=teacher,
        student=student,
        cond=labels,
        draws=one,
        options=TrajectoryOptions(steps=(1,), loss="huber", huber_c=0.01),
    )
    # pseudo-Huber per sample: sqrt(||d||^2 + c^2) - c, at most ||d|| and positive
    calls = _record(teacher, labels, one, steps=1)
    with torch.no_grad():
        diff = (student(*calls[0].args, **calls[0].kwargs).sample - calls[0].output).flatten(1)
        norms = diff.norm(dim=1)
    torch.testing.assert_close(huber["loss"].detach(), (torch.sqrt(norms**2 + 0.01**2) - 0.01).mean())
    with pytest.raises(ValueError, match="loss must be"):
        TrajectoryOptions(loss="l1")
    with pytest.raises(ValueError, match="draw_trajectory"):  # draws for 3 step counts, options for 1
        trajectory_matching_loss(
            teacher=teacher, student=student, cond=labels, draws=draws, options=TrajectoryOptions(steps=(1,))
        )


def test_keyed_draws_depend_on_the_step_and_the_samples_only(tmp_path):
    def keyed(step, indices):
        return draw_trajectory(
            KeyedRandom(seed=0, step=step, indices=indices), batch=len(indices), shape=(1, 8, 8), steps=[1, 4]
        )

    whole, half = keyed(3, [0, 1, 2, 3]), keyed(3, [2, 3])
    assert torch.equal(whole.noise[1][2:], half.noise[1]) and torch.equal(whole.seeds[2:], half.seeds)
    assert not torch.equal(keyed(4, [2, 3]).noise[0], half.noise[0])


def _method(tmp_path, student=None, **options):
    from distill import TrajectoryDistillation

    teacher = _consistency_teacher(tmp_path)
    return TrajectoryDistillation(
        teacher=teacher,
        student=student if student is not None else tiny_cond_unet(seed=1),
        evaluator=None,
        samples_per_class=0,
        seed=0,
        **options,
    )


def _distance(method, steps) -> float:
    """The evaluated student's mean distance to the teacher along fixed trajectories."""
    labels = torch.arange(8) % 10
    with torch.no_grad():
        out = trajectory_matching_loss(
            teacher=method.teacher,
            student=method.student,
            cond=labels,
            draws=_draws(steps, batch=8, seed=7),
            options=TrajectoryOptions(steps=tuple(steps)),
        )
    return float(out["loss"])


def test_training_pulls_a_student_onto_the_teachers_trajectories(tmp_path):
    method = _method(tmp_path, steps=[1, 2], optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    assert method.eval_steps == [1, 2]  # evaluated at the step counts it matches, unless told otherwise
    before = _distance(method, [1, 2])
    cpu_trainer(12).fit(method, train_dataloaders=random_digits_loader())
    after = _distance(method, [1, 2])
    assert after < 0.5 * before, (before, after)
    # exports sample as the teacher does: its scheduler
    method.save_pretrained(tmp_path / "export")
    config = json.loads((tmp_path / "export" / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "LCMScheduler"


def test_an_int8_copy_of_the_teacher_trains_as_it_converts_and_stays_close(tmp_path):
    pytest.importorskip("executorch")
    import lightning as L

    from distill import quantization as Q
    from distill.onnx_export import example_inputs

    teacher = _consistency_teacher(tmp_path)
    method = _method(
        tmp_path,
        student=copy.deepcopy(teacher.unet).requires_grad_(True),  # the teacher's frozen network, trainable
        steps=[2],
        quantize=Q.Int8QAT(calibration_batches=2, freeze_observers_after=0),
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-5),  # a fine-tune: larger steps flip roundings
    )
    assert method.quantized
    inputs = example_inputs(teacher.unet, 3, seed=2)
    seen = {}

    def outputs(student):
        kwargs = {k: v for k, v in inputs.items() if k not in ("sample", "timestep")}
        with torch.no_grad():
            return student(inputs["sample"], inputs["timestep"], **kwargs)

    class AfterCalibration(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 0:  # calibrated on the teacher's trajectories, not yet trained
                module.student.eval()
                seen["distance"] = _distance(module, [2])
                seen["frozen"] = bool(module.student.observers_frozen)
                seen["graph"], seen["converted"] = outputs(module.student), outputs(Q.convert(module.student))
                seen["weights"] = [p.clone() for p in module.student.parameters()]
                module.student.train()

    cpu_trainer(6, callbacks=[AfterCalibration()]).fit(method, train_dataloaders=random_digits_loader())
    method.student.eval()
    # the calibrated graph is what conversion (and XNNPACK) runs, before and after training
    assert seen["frozen"]
    torch.testing.assert_close(seen["graph"], seen["converted"], rtol=0, atol=1e-6)
    torch.testing.assert_close(outputs(method.student), outputs(Q.convert(method.student)), rtol=0, atol=1e-6)
    assert any(
        not torch.equal(a, b) for a, b in zip(seen["weights"], method.student.parameters(), strict=True)
    )
    after = _distance(method, [2])
    assert seen["distance"] > 0 and after < 1.2 * seen["distance"], (seen["distance"], after)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"steps": [0]}, "steps"),
        ({"steps": []}, "steps"),
        ({"loss": "l1"}, "model.init_args.loss"),
        ({"guidance_scale": 0.5}, "guidance_scale"),
        ({"huber_c": float("nan")}, "huber_c"),
    ],
)
def test_bad_options_are_refused_before_training(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        _method(tmp_path, **options)


def test_a_student_that_cannot_take_the_teachers_inputs_is_refused(tmp_path):
    from distill import TrajectoryDistillation

    teacher = _consistency_teacher(tmp_path, time_cond_proj_dim=8)
    with pytest.raises(ValueError, match="time_cond_proj_dim=8"):
        TrajectoryDistillation(teacher=teacher, student=tiny_cond_unet(seed=1), evaluator=None)
    with pytest.raises(ValueError, match="channels"):
        TrajectoryDistillation(
            teacher=teacher,
            student=tiny_cond_unet(seed=1, in_channels=3, time_cond_proj_dim=8),
            evaluator=None,
        )
