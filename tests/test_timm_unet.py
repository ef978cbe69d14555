"""timm-backbone UNets: every backbone family, BatchNorm handling, small inputs, conditioning, folding, weights."""

from __future__ import annotations

import pytest
import timm
import torch
from test_students import TINY_SD

import students
from students.timm_unet import TimmUNet, timm_unet

BACKBONES = [
    "mobilenetv3_small_100",
    "mobilenetv4_conv_small",
    "efficientvit_b0",
    "repvit_m0_9",
    "fastvit_t8",
    "mobileone_s0",
]
REPARAMETERIZABLE = ["repvit_m0_9", "fastvit_t8", "mobileone_s0"]


def _inputs(n=4):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 16, 16, generator=gen)
    return x, torch.linspace(0, 999, n).long(), torch.arange(n) % 11


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_denoises_digits_and_trains_every_parameter(backbone):
    torch.manual_seed(0)
    model = timm_unet("builtin:digits", backbone=backbone)
    x, t, c = _inputs()
    out = model(x, t, None, class_labels=c).sample
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, unused[:5]  # nothing dead: DDP needs no find_unused_parameters
    assert max(model.reductions) * 2 <= 16  # no stage below 2x2 at 16 px
    bns = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if model.norm_kind == "group":
        assert not bns
    else:
        assert model.norm_kind == "affine" and backbone in REPARAMETERIZABLE
        model.train()
        assert bns and not any(m.training for m in bns)


@pytest.mark.parametrize("norm", ["group", "affine"])
def test_a_samples_output_does_not_depend_on_its_batch_mates(norm):
    """Training-mode BatchNorm mixes timesteps and CFG halves; the replacements do not."""
    torch.manual_seed(0)
    model = timm_unet("builtin:digits", backbone="mobilenetv3_small_100", norm=norm).train()
    x, t, c = _inputs(4)
    alone = model(x[:1], t[:1], None, class_labels=c[:1]).sample
    batched = model(x, t, None, class_labels=c).sample[:1]
    torch.testing.assert_close(alone, batched, rtol=1e-5, atol=1e-5)
    mixing = timm_unet("builtin:digits", backbone="mobilenetv3_small_100", norm="batch").train()
    alone = mixing(x[:1].repeat(2, 1, 1, 1), t[:1].repeat(2), None, class_labels=c[:1].repeat(2)).sample[:1]
    batched = mixing(x, t, None, class_labels=c).sample[:1]
    assert (alone - batched).abs().max() > 1e-3  # what the replacement prevents


@pytest.mark.parametrize("backbone", REPARAMETERIZABLE)
def test_reparameterize_folds_branches_within_1e4_and_reloads(backbone, tmp_path):
    torch.manual_seed(0)
    model = timm_unet("builtin:digits", backbone=backbone).eval()
    with torch.no_grad():  # move away from the init so every branch and affine norm matters
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x, t, c = _inputs()
    with torch.no_grad():
        before = model(x, t, None, class_labels=c).sample
        n_before = sum(1 for _ in model.modules())
        model.reparameterize()
        after = model(x, t, None, class_labels=c).sample
    assert sum(1 for _ in model.modules()) < n_before
    assert (before - after).abs().max() <= 1e-4
    model.save_pretrained(tmp_path)
    loaded = TimmUNet.from_pretrained(tmp_path).eval()
    assert loaded.config.reparameterized
    with torch.no_grad():
        # rebuilt by folding fresh branches, then loaded: equal up to float summation order
        torch.testing.assert_close(loaded(x, t, None, class_labels=c).sample, after, rtol=0, atol=1e-5)


def test_group_norm_encoders_refuse_to_fold():
    model = timm_unet("builtin:digits", backbone="mobileone_s0", norm="group")
    with pytest.raises(ValueError, match="cannot fold"):
        model.reparameterize()
    with pytest.raises(ValueError, match="no reparameterisable blocks"):
        timm_unet("builtin:digits", backbone="mobilenetv3_small_100", norm="affine").reparameterize()


def test_small_inputs_pick_stages_and_input_scale_reaches_deeper():
    shallow = timm_unet("builtin:digits", backbone="mobilenetv3_small_100")
    deep = timm_unet("builtin:digits", backbone="mobilenetv3_small_100", input_scale=2)
    assert shallow.reductions == [2, 4, 8] and deep.reductions == [2, 4, 8, 16]
    x, t, c = _inputs()
    assert deep(x, t, None, class_labels=c).sample.shape == x.shape
    with pytest.raises(ValueError, match="raise input_scale"):
        timm_unet("builtin:digits", backbone="efficientvit_b0", min_feature_size=8)


def test_text_and_timestep_cond_conditioning():
    torch.manual_seed(0)
    model = timm_unet(TINY_SD, backbone="mobilenetv3_small_100", time_cond_proj_dim=8)
    assert model.cross_attention is not None and model.config.in_channels == 4
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([10, 900])
    text = torch.randn(2, 5, 8)
    w = torch.randn(2, 8)
    out = model(x, t, text, timestep_cond=w).sample
    assert out.shape == x.shape
    model.stage_film[0].weight.data.normal_()  # once conditioning reaches the encoder, every input matters
    a = model(x, t, text, timestep_cond=w).sample
    assert not torch.allclose(a, model(x, t, text.flip(0), timestep_cond=w).sample)
    assert not torch.allclose(a, model(x, t, text, timestep_cond=-w).sample)
    with pytest.raises(ValueError, match="pass encoder_hidden_states"):
        model(x, t, None, timestep_cond=w)
    with pytest.raises(ValueError, match="pass class_labels"):
        timm_unet("builtin:digits")(torch.randn(1, 1, 16, 16), 5)


def test_backbone_weights_come_from_a_local_file_only(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("mobilenetv3_small_100", pretrained=False, in_chans=1)
    path = tmp_path / "mnv3.pth"
    torch.save(source.state_dict(), path)
    model = timm_unet(
        "builtin:digits", backbone="mobilenetv3_small_100", pretrained_file=str(path), norm="batch"
    )
    torch.testing.assert_close(model.encoder.conv_stem.weight, source.conv_stem.weight)
    torch.testing.assert_close(model.encoder.blocks[0][0].conv_dw.weight, source.blocks[0][0].conv_dw.weight)
    random = timm_unet("builtin:digits", backbone="mobilenetv3_small_100")
    assert not torch.equal(random.encoder.conv_stem.weight, source.conv_stem.weight)
    with pytest.raises(ValueError, match="cannot be built by timm"):
        timm_unet("builtin:digits", backbone="not_a_timm_model")


def test_digits_presets_are_registered_and_under_a_quarter_of_the_teachers_macs():
    from distill.flops import count_macs, example_inputs
    from teachers import DiffusionTeacher

    teacher = DiffusionTeacher.from_pretrained("builtin:digits").unet
    budget = count_macs(teacher, example_inputs(teacher)).total / 4
    for name in ("timm_unet_digits", "mobileone_unet_digits", "efficient_unet_digits"):
        model = students.create_student(name)
        assert count_macs(model, example_inputs(model)).total <= budget, name


@pytest.mark.parametrize("name", ["timm_unet_digits", "efficient_unet_digits"])
def test_exported_students_of_our_classes_load_as_denoisers(name, tmp_path):
    import json

    from teachers import DiffusionTeacher

    torch.manual_seed(0)
    teacher = DiffusionTeacher.from_pretrained("builtin:digits")
    model = students.create_student(name).eval()
    model.save_pretrained(tmp_path / "unet")
    teacher.schedule.save_pretrained(tmp_path / "scheduler")
    loaded = DiffusionTeacher.from_pretrained(tmp_path)
    assert type(loaded.unet) is type(model) and loaded.num_classes == 10
    x, t, c = _inputs(3)
    with torch.no_grad():
        expected = model(x, t, None, class_labels=c).sample
    torch.testing.assert_close(loaded.unet(x, t, None, class_labels=c).sample, expected, rtol=0, atol=1e-5)
    # a folder naming any other class is refused: loading never imports what a folder names
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    (tmp_path / "unet" / "config.json").write_text(json.dumps({**config, "_class_name": "os.system"}))
    with pytest.raises(ValueError, match=r"'os.system'; supported classes are"):
        DiffusionTeacher.from_pretrained(tmp_path)
