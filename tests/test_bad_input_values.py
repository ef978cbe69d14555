"""The bad-input catalogue, values: non-finite numbers, probabilities out of [0, 1], step counts below 1, corrupt
files. Each is refused up front, naming the option, key or file, what was expected and how to fix it."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import save_teacher_folder, tiny_cond_unet
from safetensors.torch import load_file, save_file

from students.loading import WEIGHTS_NAME, load_student
from teachers import DiffusionTeacher


def _poison(weights_file, value: float = float("nan")) -> None:
    """Write one non-finite value into the first floating tensor of a safetensors file."""
    state = load_file(str(weights_file))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone()
    state[name].view(-1)[0] = value
    save_file(state, str(weights_file))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_student_with_non_finite_weights_is_refused_naming_the_file(tmp_path, value):
    folder = tmp_path / "student"
    tiny_cond_unet(seed=1).save_pretrained(folder)
    _poison(folder / WEIGHTS_NAME, value)
    with pytest.raises(ValueError, match=r"NaN or inf") as info:
        load_student(folder)
    assert str(folder / WEIGHTS_NAME) in str(info.value)


def test_a_teacher_with_non_finite_weights_is_refused_naming_the_file(tiny_teacher_dir):
    weights = tiny_teacher_dir / "unet" / WEIGHTS_NAME
    _poison(weights)
    with pytest.raises(ValueError, match=r"NaN or inf") as info:
        DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    assert str(weights) in str(info.value)


@pytest.mark.parametrize("which", ["teacher unet", "teacher scheduler", "student", "student scheduler"])
def test_a_garbage_config_json_names_the_file_and_what_it_should_be(tmp_path, which):
    folder = tmp_path / "model"
    save_teacher_folder(folder, tiny_cond_unet(seed=0))
    target = {
        "teacher unet": folder / "unet" / "config.json",
        "teacher scheduler": folder / "scheduler" / "scheduler_config.json",
        "student": folder / "unet" / "config.json",
        "student scheduler": folder / "scheduler" / "scheduler_config.json",
    }[which]
    target.write_text("{not json at all")
    load = load_student if which.startswith("student") else DiffusionTeacher.from_pretrained
    with pytest.raises(ValueError, match="is not valid JSON") as info:
        load(folder)
    message = str(info.value)
    assert str(target) in message and "config" in message


def test_a_config_json_that_is_not_an_object_is_named(tmp_path):
    folder = tmp_path / "model"
    save_teacher_folder(folder, tiny_cond_unet(seed=0))
    (folder / "unet" / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"holds a JSON list, not an object"):
        DiffusionTeacher.from_pretrained(folder)


def test_an_unknown_beta_schedule_names_the_file_the_key_and_the_allowed_values(tmp_path):
    folder = tmp_path / "model"
    save_teacher_folder(folder, tiny_cond_unet(seed=0))
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(scheduler_file.read_text())
    config["beta_schedule"] = "cosine_typo"
    scheduler_file.write_text(json.dumps(config))
    with pytest.raises(ValueError) as info:
        DiffusionTeacher.from_pretrained(folder)
    message = str(info.value)
    for fragment in (str(scheduler_file), "beta_schedule", "'cosine_typo'", "squaredcos_cap_v2"):
        assert fragment in message, message


# -- sampling: `distill sample`, the pipeline and the sampling contract ---------------------------------------


def _sample(folder, tmp_path, *extra: str) -> None:
    from distill.cli import main

    main(
        ["sample", "--model", str(folder), "--labels", "0", "1", "--out", str(tmp_path / "grid.png"), *extra]
    )


@pytest.mark.parametrize(
    ("option", "value"),
    [("--guidance", "nan"), ("--guidance", "inf"), ("--steps", "0"), ("--steps", "-2"), ("--nrow", "0")],
)
def test_sample_refuses_non_finite_or_non_positive_options_naming_them(
    tiny_teacher_dir, tmp_path, capsys, option, value
):
    with pytest.raises(SystemExit) as info:
        _sample(tiny_teacher_dir, tmp_path, option, value)
    assert info.value.code != 0
    err = capsys.readouterr().err
    assert option in err and value in err, err
    assert not (tmp_path / "grid.png").exists()


def test_sample_refuses_a_model_with_non_finite_weights_naming_the_file(tiny_teacher_dir, tmp_path):
    weights = tiny_teacher_dir / "unet" / WEIGHTS_NAME
    _poison(weights)
    with pytest.raises(ValueError, match="NaN or inf") as info:
        _sample(tiny_teacher_dir, tmp_path, "--steps", "1")
    assert str(weights) in str(info.value)
    assert not (tmp_path / "grid.png").exists()


def test_sample_raises_instead_of_writing_black_images(tiny_teacher_dir, tmp_path, monkeypatch):
    """Weights that are finite but blow up (a diverged run's) give NaN samples: an error, no PNG."""
    weights = tiny_teacher_dir / "unet" / WEIGHTS_NAME
    state = load_file(str(weights))
    state = {k: v * 1e30 if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(weights))
    with pytest.raises(FloatingPointError, match=r"samples from ddim sampling in 2 step\(s\) are NaN or inf"):
        _sample(tiny_teacher_dir, tmp_path, "--steps", "2")
    assert not (tmp_path / "grid.png").exists()


def test_the_pipeline_refuses_zero_steps_and_non_finite_guidance(tiny_teacher_dir):
    from distill.pipelines import ClassConditionalPipeline

    pipe = ClassConditionalPipeline.from_pretrained(tiny_teacher_dir)
    with pytest.raises(ValueError, match=r"num_inference_steps must be a positive integer, got 0"):
        pipe(class_labels=[0], num_inference_steps=0)
    with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
        pipe(class_labels=[0], num_inference_steps=1, guidance_scale=float("nan"))


def test_the_sampling_contract_raises_on_non_finite_samples(tiny_teacher_dir):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    noise = torch.randn(3, 1, 8, 8)
    noise[1, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"1 of 3 samples"):
        teacher.sample(torch.tensor([0, 1, 2]), noise, steps=2)
    assert torch.isfinite(teacher.sample(torch.tensor([0, 1]), torch.randn(2, 1, 8, 8), steps=2)).all()


# -- the methods' numeric options, refused at construction ----------------------------------------------------


def _kd(teacher_dir, **options):
    from distill.methods.knowledge import KnowledgeDistillation

    teacher = DiffusionTeacher.from_pretrained(teacher_dir)
    options.setdefault("samples_per_class", 0)
    return KnowledgeDistillation(teacher, tiny_cond_unet(seed=1), init_from_teacher=False, **options)


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (
            {"cond_drop_prob": 1.5},
            ["cond_drop_prob must be in [0, 1]", "1.5", "model.init_args.cond_drop_prob"],
        ),
        ({"cond_drop_prob": -0.1}, ["cond_drop_prob must be in [0, 1]"]),
        ({"ema_decay": 1.0}, ["ema_decay must be in [0, 1)", "model.init_args.ema_decay"]),
        ({"ema_decay": float("nan")}, ["ema_decay must be in [0, 1)", "nan"]),
        ({"eval_steps": [0, 1, 4]}, ["eval_steps", "[0, 1, 4]", "[1, 1000]", "model.init_args.eval_steps"]),
        ({"eval_steps": [2, 5000]}, ["eval_steps", "[1, 1000]"]),
        ({"eval_steps": []}, ["eval_steps", "non-empty"]),
        ({"eval_teacher_steps": -5}, ["eval_teacher_steps", "-5"]),
        ({"eval_guidance_scale": float("inf")}, ["eval_guidance_scale must be a finite number"]),
        ({"feature_weight": float("nan")}, ["feature_weight must be a finite number"]),
        ({"eval_num_samples": -1}, ["eval_num_samples", ">= 0"]),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_method_options_out_of_range_are_refused_naming_the_key(tiny_teacher_dir, options, fragments):
    with pytest.raises(ValueError) as info:
        _kd(tiny_teacher_dir, **options)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("optimizer", "key"),
    [
        ({"lr": -1e-3}, "optimizer.init_args.lr"),
        ({"lr": float("nan")}, "optimizer.init_args.lr"),
        ({"lr": float("inf")}, "optimizer.init_args.lr"),
        ({"lr": 1e-3, "weight_decay": -0.01}, "optimizer.init_args.weight_decay"),
        ({"lr": 1e-3, "betas": (0.9, 1.5)}, "optimizer.init_args.betas"),
    ],
)
def test_invalid_optimizer_values_are_refused_at_construction_naming_the_key(
    tiny_teacher_dir, optimizer, key
):
    from functools import partial

    with pytest.raises(ValueError, match=f"model.init_args.{key}") as info:
        _kd(tiny_teacher_dir, optimizer=partial(torch.optim.AdamW, **optimizer))
    assert "e.g. lr: 0.0005" in str(info.value)


def test_the_consistency_and_training_options_are_checked_too(tiny_teacher_dir):
    from diffusers import DDPMScheduler

    from distill.methods.consistency import ConsistencyDistillation
    from distill.methods.training import DiffusionTraining

    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    student = tiny_cond_unet(seed=1, time_cond_proj_dim=8)
    with pytest.raises(ValueError, match=r"cond_drop_prob must be in \[0, 1\], got 2"):
        ConsistencyDistillation(teacher, student, cond_drop_prob=2.0, init_from_teacher=False)
    with pytest.raises(ValueError, match="guidance_max must be a finite number"):
        ConsistencyDistillation(teacher, student, guidance_max=float("inf"), init_from_teacher=False)
    with pytest.raises(ValueError, match="sample_steps must be a whole number"):
        DiffusionTraining(tiny_cond_unet(seed=0), DDPMScheduler(), sample_steps=0)


def test_a_checkpoint_with_non_finite_weights_is_refused_naming_the_file(tiny_teacher_dir, tmp_path):
    from distill.export import load_checkpoint

    module = _kd(tiny_teacher_dir)
    state = {k: v for k, v in module.state_dict().items() if not k.startswith("teacher.")}
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    path = tmp_path / "diverged.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError, match="NaN or inf") as info:
        load_checkpoint(_kd(tiny_teacher_dir), path)
    assert str(path) in str(info.value) and name in str(info.value)
