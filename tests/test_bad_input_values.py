"""The bad-input catalogue, values: non-finite numbers, probabilities out of [0, 1], step counts below 1, corrupt
files. Each is refused up front, naming the option, key or file, what was expected and how to fix it."""

from __future__ import annotations

import json

import pytest
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
