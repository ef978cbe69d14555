"""students.load_student: trained students as starting points (exact reload, LCM's zero-initialised w embedding)."""

from __future__ import annotations

import json

import pytest
import torch

from students.efficient import efficient_unet_digits
from students.loading import list_builtin_students, load_student


def _inputs(batch: int = 3):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 16, 16, generator=gen)
    t = torch.tensor([10, 400, 990])[:batch]
    labels = torch.tensor([1, 7, 10])[:batch]
    return x, t, labels


@pytest.fixture
def saved_student(tmp_path):
    torch.manual_seed(0)
    net = efficient_unet_digits(teacher="builtin:digits").eval()
    folder = tmp_path / "export"
    net.save_pretrained(folder / "unet")
    return net, folder


def test_reload_is_exact_from_export_and_model_folders(saved_student):
    net, folder = saved_student
    x, t, labels = _inputs()
    with torch.no_grad():
        expected = net(x, t, encoder_hidden_states=None, class_labels=labels).sample
        for path in (folder, folder / "unet"):
            loaded = load_student(path).eval()
            assert type(loaded) is type(net)
            got = loaded(x, t, encoder_hidden_states=None, class_labels=labels).sample
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_adding_the_guidance_embedding_starts_as_the_loaded_network(saved_student):
    net, folder = saved_student
    loaded = load_student(folder, time_cond_proj_dim=32).eval()
    assert loaded.config.time_cond_proj_dim == 32
    assert torch.count_nonzero(loaded.time_embedding.cond_proj.weight) == 0
    x, t, labels = _inputs()
    cond = torch.randn(3, 32)
    with torch.no_grad():
        expected = net(x, t, encoder_hidden_states=None, class_labels=labels).sample
        got = loaded(x, t, encoder_hidden_states=None, class_labels=labels, timestep_cond=cond).sample
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # the new projection is trainable and changes the output once it is non-zero
    with torch.no_grad():
        loaded.time_embedding.cond_proj.weight.normal_()
        moved = loaded(x, t, encoder_hidden_states=None, class_labels=labels, timestep_cond=cond).sample
    assert (moved - expected).abs().max() > 1e-3


def test_conflicting_or_unknown_inputs_are_named(saved_student, tmp_path):
    _, folder = saved_student
    with_cond = tmp_path / "with_cond"
    load_student(folder, time_cond_proj_dim=32).save_pretrained(with_cond)
    assert load_student(with_cond).config.time_cond_proj_dim == 32
    with pytest.raises(ValueError, match="time_cond_proj_dim=32"):
        load_student(with_cond, time_cond_proj_dim=64)
    with pytest.raises(FileNotFoundError, match="no model config"):
        load_student(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="built-in student"):
        load_student("builtin:no_such_student")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"_class_name": "os.system"}))
    with pytest.raises(ValueError, match="loadable classes"):
        load_student(foreign)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_student(folder)


def test_builtin_students_load():
    for name in list_builtin_students():
        net = load_student(f"builtin:{name}")
        assert sum(p.numel() for p in net.parameters()) > 0


def test_stock_diffusers_refuses_an_efficient_student_instead_of_building_another_network(tmp_path):
    from diffusers import UNet2DConditionModel

    from distill.diffusers_folder import save_student_folder
    from students.loading import builtin_students_dir
    from teachers import DiffusionTeacher

    teacher = DiffusionTeacher.from_pretrained("builtin:digits")
    torch.manual_seed(0)
    net = efficient_unet_digits(teacher="builtin:digits").eval()
    save_student_folder(tmp_path / "export", student=net, schedule=teacher.schedule, teacher=teacher)
    shipped = [builtin_students_dir() / name / "unet" for name in list_builtin_students()]
    for folder in (tmp_path / "export" / "unet", *shipped):
        with pytest.raises(ValueError, match="SeparableDownBlock2D does not exist"):
            UNet2DConditionModel.from_pretrained(folder)
    x, t, labels = _inputs()
    with torch.no_grad():
        expected = net(x, t, encoder_hidden_states=None, class_labels=labels).sample
        for loaded in (
            load_student(tmp_path / "export"),
            type(net).from_pretrained(tmp_path / "export" / "unet"),
            DiffusionTeacher.from_pretrained(tmp_path / "export").unet,
        ):
            got = loaded.eval()(x, t, encoder_hidden_states=None, class_labels=labels).sample
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_folders_naming_stock_blocks_with_separable_convs_still_load(saved_student):
    from students.efficient import EfficientUNet2DConditionModel

    net, folder = saved_student
    config_file = folder / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    assert config["down_block_types"][0] == "SeparableDownBlock2D"
    old = {
        **config,
        "down_block_types": [name.removeprefix("Separable") for name in config["down_block_types"]],
        "up_block_types": [name.removeprefix("Separable") for name in config["up_block_types"]],
        "mid_block_type": config["mid_block_type"].removeprefix("Separable"),
    }
    config_file.write_text(json.dumps(old))  # as written before the blocks were renamed
    x, t, labels = _inputs()
    with torch.no_grad():
        expected = net(x, t, encoder_hidden_states=None, class_labels=labels).sample
        for loaded in (load_student(folder), EfficientUNet2DConditionModel.from_pretrained(folder / "unet")):
            assert loaded.config.down_block_types[0] == "SeparableDownBlock2D"
            got = loaded.eval()(x, t, encoder_hidden_states=None, class_labels=labels).sample
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="separable_convs=False, but the block types name separable blocks"):
        EfficientUNet2DConditionModel.from_config({**config, "separable_convs": False})


def test_timm_student_folder_refuses_a_stock_unet_and_reloads_exactly(tmp_path):
    """A TimmUNet folder names a block stock diffusers lacks: UNet2DConditionModel refuses it instead of
    building a default network with fresh weights; the library's loader reloads it exactly."""
    from diffusers import UNet2DConditionModel

    from students.timm_unet import timm_unet_digits

    torch.manual_seed(0)
    net = timm_unet_digits(teacher="builtin:digits").eval()
    net.save_pretrained(tmp_path / "unet")
    assert json.loads((tmp_path / "unet" / "config.json").read_text())["down_block_types"] == [
        "TimmBackboneEncoder"
    ]
    with pytest.raises((ValueError, TypeError, KeyError)):
        UNet2DConditionModel.from_pretrained(tmp_path / "unet")
    x, t, labels = _inputs()
    loaded = load_student(tmp_path).eval()
    with torch.no_grad():
        expected = net(x, t, encoder_hidden_states=None, class_labels=labels).sample
        got = loaded(x, t, encoder_hidden_states=None, class_labels=labels).sample
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
