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
