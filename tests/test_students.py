"""Students: the registry, entry points, BK-SDM block removal (counts, mappings, feature pairs), import hygiene."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import diffusers
import pytest
import torch
from conftest import tiny_cond_unet
from diffusers import UNet2DConditionModel

import students
from students.bk import block_removed_unet
from students.common import teacher_config

# SD-v1.4/v1.5 UNet (CompVis/stable-diffusion-v1-4 unet/config.json), random weights on the meta device.
SD_V1 = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}

# A 4-stage SD-shaped teacher small enough to run: two pairs per stage, cross-attention, a mid block.
TINY_SD = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [8, 16, 16, 16],
    "layers_per_block": 2,
    "cross_attention_dim": 8,
    "attention_head_dim": 4,
    "norm_num_groups": 4,
}


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# -- registry ------------------------------------------------------------------------------------------------
def test_registry_lists_and_creates_the_shipped_students():
    names = students.list_students()
    assert {"bk_base", "bk_small", "bk_tiny", "bk_small_keep_layers", "bk_tiny_keep_layers"} <= set(names)
    assert names == sorted(names)
    assert students.list_students("bk_t*") == ["bk_tiny", "bk_tiny_keep_layers"]
    assert students.is_student("bk_small") and not students.is_student("nope")
    model = students.create_student("bk_small", teacher=TINY_SD)
    assert isinstance(model, UNet2DConditionModel) and model.mid_block is None


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"unknown student 'bk_smal'.*did you mean bk_small"):
        students.create_student("bk_smal", teacher=TINY_SD)


def test_register_student_decorator_and_duplicate_names():
    from students import registry

    @students.register_student(name="_test_only_student")
    def build(**kwargs):
        return tiny_cond_unet(**kwargs)

    try:
        assert students.get_student_builder("_test_only_student") is build
        assert isinstance(students.create_student("_test_only_student", seed=1), UNet2DConditionModel)
        students.register_student(build, name="_test_only_student")  # the same builder again is harmless

        def other(**kwargs):
            return tiny_cond_unet()

        with pytest.raises(ValueError, match="already registered"):
            students.register_student(other, name="_test_only_student")
    finally:
        registry._BUILDERS.pop("_test_only_student", None)


def test_entry_points_add_students_from_other_packages(tmp_path):
    """A package declaring ``[distill_diffusion.students]`` in its metadata appears in the registry."""
    (tmp_path / "my_students.py").write_text(
        textwrap.dedent(
            """
            from diffusers import UNet2DConditionModel

            def tiny(**kwargs):
                return UNet2DConditionModel(
                    sample_size=8, in_channels=1, out_channels=1, block_out_channels=[8, 16],
                    down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
                    layers_per_block=1, norm_num_groups=4, **kwargs,
                )
            """
        )
    )
    dist = tmp_path / "my_students-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-students\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[distill_diffusion.students]\nmy_tiny = my_students:tiny\n")
    code = (
        "import students\n"
        "assert 'my_tiny' in students.list_students(), students.list_students()\n"
        "m = students.create_student('my_tiny')\n"
        "print(type(m).__name__, m.config.block_out_channels)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "UNet2DConditionModel [8, 16]"


def test_students_import_without_lightning_distill_or_teachers():
    code = (
        "import sys\n"
        "sys.modules['lightning'] = None  # importing it would raise\n"
        "sys.modules['pytorch_lightning'] = None\n"
        "import students\n"
        "m = students.create_student('bk_tiny_keep_layers', teacher='builtin:digits')\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('distill', 'teachers', 'lightning'))\n"
        "assert not [k for k in bad if sys.modules[k] is not None], bad\n"
        "print(len(students.list_students()) >= 5)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


# -- teacher configs -----------------------------------------------------------------------------------------
def test_teacher_config_from_every_kind_of_source(tmp_path, tiny_teacher_dir):
    unet = tiny_cond_unet()
    expected = teacher_config(unet)
    assert "_class_name" not in expected and expected["block_out_channels"] == [16, 32]
    assert teacher_config(tiny_teacher_dir) == expected  # pipeline-style folder (unet/)
    assert teacher_config(tiny_teacher_dir / "unet") == expected  # model folder
    assert teacher_config(tiny_teacher_dir / "unet" / "config.json") == expected
    assert teacher_config(dict(unet.config)) == expected
    assert teacher_config("builtin:digits")["block_out_channels"] == [32, 64, 128]
    with pytest.raises(FileNotFoundError, match="no UNet config found"):
        teacher_config(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no built-in teacher 'builtin:nope'"):
        teacher_config("builtin:nope")


# -- BK-SDM ------------------------------------------------------------------------------------------------
# Source: Nota-NetsPresso/BK-SDM, src/unet_config/bk_{base,small,tiny}/config.json. Against SD-v1.4's UNet config
# they change only: base layers_per_block 1; small also mid_block_type null; tiny also 3 stages (320, 640, 1280),
# three CrossAttnDown/CrossAttnUp blocks. Instantiated by diffusers those configs have exactly these counts
# (MODEL_CARD.md rounds the U-Nets to 0.86B / 0.58B / 0.49B / 0.33B).
BK_PARAMS = {"teacher": 859_520_964, "bk_base": 579_384_964, "bk_small": 482_346_884, "bk_tiny": 323_384_964}
BK_CONFIGS = {
    "bk_base": {"layers_per_block": 1},
    "bk_small": {"layers_per_block": 1, "mid_block_type": None},
    "bk_tiny": {
        "layers_per_block": 1,
        "mid_block_type": None,
        "block_out_channels": [320, 640, 1280],
        "down_block_types": ["CrossAttnDownBlock2D"] * 3,
        "up_block_types": ["CrossAttnUpBlock2D"] * 3,
    },
}


@pytest.mark.parametrize("name", ["bk_base", "bk_small", "bk_tiny"])
def test_bk_students_from_an_sd_v1_config_equal_bk_sdm(name):
    with torch.device("meta"):
        teacher = UNet2DConditionModel(**SD_V1)
        student = students.create_student(name, teacher=SD_V1)
        released = UNet2DConditionModel(**{**SD_V1, **BK_CONFIGS[name]})
    assert _params(teacher) == BK_PARAMS["teacher"]
    assert _params(student) == _params(released) == BK_PARAMS[name]
    for key, value in BK_CONFIGS[name].items():
        assert student.config[key] == value


def test_bk_init_mapping_and_feature_pairs_are_the_papers():
    """BK-SDM's copy_weight_from_teacher and feature hooks (src/kd_train_text_to_image.py)."""
    small = students.create_student("bk_small", teacher=SD_V1 | {"sample_size": 8}).student_info
    assert small.init_mapping == {
        "up_blocks.0.resnets.1": "up_blocks.0.resnets.2",
        "up_blocks.1.resnets.1": "up_blocks.1.resnets.2",
        "up_blocks.1.attentions.1": "up_blocks.1.attentions.2",
        "up_blocks.2.resnets.1": "up_blocks.2.resnets.2",
        "up_blocks.2.attentions.1": "up_blocks.2.attentions.2",
        "up_blocks.3.resnets.1": "up_blocks.3.resnets.2",
        "up_blocks.3.attentions.1": "up_blocks.3.attentions.2",
    }
    assert sorted(small.feature_pairs) == [
        (f"{g}.{i}", f"{g}.{i}") for g in ("down_blocks", "up_blocks") for i in range(4)
    ]
    tiny = block_removed_unet(
        SD_V1, layers_per_block=1, remove_mid_block=True, remove_inner_stages=1
    ).student_info
    assert tiny.init_mapping == {
        "up_blocks.0": "up_blocks.1",
        "up_blocks.0.resnets.1": "up_blocks.1.resnets.2",
        "up_blocks.0.attentions.1": "up_blocks.1.attentions.2",
        "up_blocks.1": "up_blocks.2",
        "up_blocks.1.resnets.1": "up_blocks.2.resnets.2",
        "up_blocks.1.attentions.1": "up_blocks.2.attentions.2",
        "up_blocks.2": "up_blocks.3",
        "up_blocks.2.resnets.1": "up_blocks.3.resnets.2",
        "up_blocks.2.attentions.1": "up_blocks.3.attentions.2",
    }
    assert tiny.feature_pairs == [
        ("down_blocks.0", "down_blocks.0"),
        ("down_blocks.1", "down_blocks.1"),
        ("down_blocks.2.attentions.1.proj_out", "down_blocks.2.attentions.0.proj_out"),
        ("up_blocks.1", "up_blocks.0"),
        ("up_blocks.2", "up_blocks.1"),
        ("up_blocks.3", "up_blocks.2"),
    ]


def test_bk_tiny_initialised_by_the_mapping_and_trained_by_kd(tiny_teacher_dir):
    from distill.methods.knowledge import KnowledgeDistillation
    from teachers import DiffusionTeacher

    torch.manual_seed(0)
    teacher_unet = UNet2DConditionModel(**TINY_SD)
    student = students.create_student("bk_tiny", teacher=teacher_unet)
    from distill.features import transfer_weights

    report = transfer_weights(source=teacher_unet, target=student, mapping=student.student_info.init_mapping)
    assert not report.shape_mismatch and not report.missing_in_source  # every student tensor has a source
    t, s = teacher_unet.state_dict(), student.state_dict()
    torch.testing.assert_close(
        s["up_blocks.0.resnets.1.conv1.weight"], t["up_blocks.1.resnets.2.conv1.weight"]
    )
    torch.testing.assert_close(
        s["up_blocks.0.resnets.0.conv1.weight"], t["up_blocks.1.resnets.0.conv1.weight"]
    )
    torch.testing.assert_close(
        s["down_blocks.2.attentions.0.proj_out.weight"], t["down_blocks.2.attentions.0.proj_out.weight"]
    )

    # on the digits-shaped tiny teacher, KD picks the builder's mapping and pairs up by itself
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    student = students.create_student("bk_tiny_keep_layers", teacher=teacher)
    kd = KnowledgeDistillation(teacher, student, samples_per_class=0)
    assert kd.feature_pairs == [
        ("down_blocks.0.resnets.0", "down_blocks.0.resnets.0"),
        ("up_blocks.1", "up_blocks.0"),
    ]
    # same widths, so everything is copied but the first up resnet: it now follows the 16-channel stage
    # directly instead of the removed 32-channel one (in SD both are 1280 wide, so BK-Tiny copies it too)
    assert kd.init_report.shape_mismatch
    assert all(n.startswith("up_blocks.0.resnets.0.") for n in kd.init_report.shape_mismatch)
    assert not kd.init_report.missing_in_source
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    losses = kd.training_losses((images, torch.arange(4)))
    assert all(torch.isfinite(v) for v in losses.values()) and losses["feature_kd"] > 0


def test_bk_bad_requests_are_explained():
    with pytest.raises(ValueError, match="layers_per_block=1: nothing to remove"):
        students.create_student("bk_base", teacher="builtin:digits")
    with pytest.raises(ValueError, match=r"remove_inner_stages must be in \[0, 2\]"):
        block_removed_unet("builtin:digits", remove_inner_stages=3)
    with pytest.raises(ValueError, match="block_out_channels needs 2 entries"):
        block_removed_unet("builtin:digits", remove_inner_stages=1, block_out_channels=[8, 16, 32])
    with pytest.raises(ValueError, match="only removes"):
        block_removed_unet(SD_V1, layers_per_block=3)


# -- efficient UNet --------------------------------------------------------------------------------------------
def test_efficient_unet_places_attention_by_resolution_and_inherits_the_teachers_inputs():
    from students.efficient import efficient_unet

    digits = efficient_unet("builtin:digits", block_out_channels=(16, 32, 64), norm_num_groups=8)
    assert digits.config.down_block_types == ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"]  # 16, 8, 4 px
    assert digits.config.num_class_embeds == 11 and digits.config.sample_size == 16
    wide_attention = efficient_unet(
        "builtin:digits", block_out_channels=(16, 32, 64), attention_max_resolution=8
    )
    assert wide_attention.config.down_block_types == ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]
    text = efficient_unet(
        TINY_SD,
        block_out_channels=(8, 16, 16, 16),
        norm_num_groups=4,
        attention_head_dim=4,
        attention_per_stage=(0, 1, 2, 0),
        resnets_per_stage=(1, 1, 2, 2),
    )
    assert text.config.down_block_types == [
        "DownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    assert text.config.cross_attention_dim == 8 and text.config.layers_per_block == [1, 1, 2, 2]
    assert len(text.down_blocks[2].attentions[0].transformer_blocks) == 2
    out = text(
        torch.randn(2, 4, 16, 16), torch.tensor([1, 999]), encoder_hidden_states=torch.randn(2, 5, 8)
    ).sample
    assert out.shape == (2, 4, 16, 16)


def test_separable_convs_replace_resnet_convs_and_survive_save_load(tmp_path):
    from students.efficient import EfficientUNet2DConditionModel, SeparableConv2d

    model = students.create_student("efficient_unet_digits").eval()
    plain = students.create_student("efficient_unet_digits", separable_convs=False)
    assert isinstance(model, EfficientUNet2DConditionModel) and type(plain) is UNet2DConditionModel
    separable = [m for m in model.modules() if isinstance(m, SeparableConv2d)]
    resnets = [m for m in model.modules() if type(m).__name__ == "ResnetBlock2D"]
    assert len(separable) == 2 * len(resnets) > 0
    assert _params(model) < 0.5 * _params(plain)
    model.save_pretrained(tmp_path)
    loaded = EfficientUNet2DConditionModel.from_pretrained(tmp_path).eval()
    assert loaded.config.separable_convs is True
    x, t, c = torch.randn(2, 1, 16, 16), torch.tensor([10, 900]), torch.tensor([3, 10])
    torch.testing.assert_close(
        loaded(x, t, None, class_labels=c).sample, model(x, t, None, class_labels=c).sample, rtol=0, atol=0
    )


def test_efficient_unet_bad_arguments():
    from students.efficient import efficient_unet

    with pytest.raises(ValueError, match="resnets_per_stage needs 3 entries"):
        efficient_unet("builtin:digits", resnets_per_stage=(1, 1))
    with pytest.raises(ValueError, match="attention_per_stage needs 3 entries"):
        efficient_unet("builtin:digits", attention_per_stage=(0, -1, 1))
    with pytest.raises(ValueError, match="must divide by norm_num_groups=8"):
        efficient_unet("builtin:digits", block_out_channels=(12, 32, 64))


# -- every registered student ----------------------------------------------------------------------------------
SMALL_SD = {"block_out_channels": (8, 16, 16, 16), "norm_num_groups": 4, "attention_head_dim": 4}
# tiny SD3 / FLUX transformer configs (the classes and shapes of the real ones, a few hundred thousand parameters)
TINY_SD3 = {
    "_class_name": "SD3Transformer2DModel",
    "sample_size": 8,
    "patch_size": 2,
    "in_channels": 4,
    "out_channels": 4,
    "num_layers": 4,
    "attention_head_dim": 8,
    "num_attention_heads": 4,
    "joint_attention_dim": 32,
    "caption_projection_dim": 32,
    "pooled_projection_dim": 16,
    "pos_embed_max_size": 8,
}
TINY_FLUX = {
    "_class_name": "FluxTransformer2DModel",
    "patch_size": 1,
    "in_channels": 16,
    "num_layers": 2,
    "num_single_layers": 4,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 16,
    "guidance_embeds": True,
    "axes_dims_rope": [4, 6, 6],
}
BUILD_KWARGS = {
    "sd3_depth_half": {"teacher": TINY_SD3},
    "sd3_narrow_half": {"teacher": TINY_SD3},
    "flux_depth_half": {"teacher": TINY_FLUX},
    "flux_narrow_half": {"teacher": TINY_FLUX},
    "bk_base": {"teacher": TINY_SD},
    "bk_small": {"teacher": TINY_SD},
    "bk_tiny": {"teacher": TINY_SD},
    "efficient_unet_sd": {"teacher": TINY_SD, **SMALL_SD},
    "pruned_unet": {
        "teacher": "builtin:digits",
        "removed_units": ["mid_block", "down_blocks.2.attentions.0", "up_blocks.0.resnets.1"],
        "block_out_channels": [16, 32, 64],
        "norm_num_groups": 8,
        "separable_convs": True,
    },
}


def _example(model):
    cfg = model.config
    if (
        "joint_attention_dim" in cfg
    ):  # SD3 / FLUX transformers: latents, text tokens and the pooled projection
        channels = cfg.in_channels // 4 if "num_single_layers" in cfg else cfg.in_channels
        cond = {
            "encoder_hidden_states": torch.randn(2, 3, cfg.joint_attention_dim),
            "pooled_projections": torch.randn(2, cfg.pooled_projection_dim),
        }
        return torch.randn(2, channels, 8, 8), torch.tensor([0.0, 999.0]), {"cond": cond}
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    kwargs = {"encoder_hidden_states": None}
    if cfg.num_class_embeds:
        kwargs["class_labels"] = torch.tensor([0, cfg.num_class_embeds - 1])
    if cfg.get("cross_attention_dim") and (
        any("CrossAttn" in t for t in cfg.get("down_block_types", [])) or "down_block_types" not in cfg
    ):
        kwargs["encoder_hidden_states"] = torch.randn(2, 3, cfg.cross_attention_dim)
    if cfg.get("time_cond_proj_dim"):
        kwargs["timestep_cond"] = torch.randn(2, cfg.time_cond_proj_dim)
    return torch.randn(2, cfg.in_channels, size, size), torch.tensor([0, 999]), kwargs


# Parameter counts of each registered student as built here (a regression lock; BK-SDM's are checked against the
# paper's configs above), and the teacher it is built from: its MACs per forward must stay below the teacher's.
EXPECTED_PARAMS = {
    "bk_base": 137_764,
    "bk_small": 121_588,
    "bk_small_keep_layers": 2_045_665,
    "bk_tiny": 95_524,
    "bk_tiny_keep_layers": 470_945,
    "efficient_unet_digits": 223_313,
    "efficient_unet_sd": 97_372,
    "flux_depth_half": 93_776,
    "flux_narrow_half": 28_784,
    "mobileone_unet_digits": 831_473,
    "pruned_unet": 176_081,
    "sd3_depth_half": 114_960,
    "sd3_narrow_half": 22_448,
    "timm_unet_digits": 143_849,
}


class _Out:
    def __init__(self, sample):
        self.sample = sample


def _run(model, x, t, kwargs):
    """The student's output as its pipelines call it (SD3/FLUX transformers through their adapter)."""
    if "cond" in kwargs:
        from teachers.network import call_denoiser

        return _Out(call_denoiser(model, x, t, kwargs["cond"]))
    return model(x, t, **kwargs)


@pytest.mark.parametrize("name", [n for n in students.list_students() if not n.startswith("_")])
def test_every_registered_student_runs_trains_and_round_trips(name, tmp_path):
    from distill.flops import count_macs, example_inputs

    torch.manual_seed(0)
    model = students.create_student(name, **BUILD_KWARGS.get(name, {"teacher": "builtin:digits"}))
    assert name in EXPECTED_PARAMS, f"add {name} to EXPECTED_PARAMS ({_params(model):,} parameters)"
    assert _params(model) == EXPECTED_PARAMS[name]
    assert isinstance(model.student_info, students.StudentInfo)
    x, t, kwargs = _example(model)
    # save/load round trip: every tensor bit-exact, and the same outputs. (Loaded tensors live in other buffers;
    # some CPU kernels vectorise by buffer alignment, which can move the last float bit, hence 1e-6 on outputs.)
    model.eval().save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    saved, reloaded = model.state_dict(), loaded.state_dict()
    assert saved.keys() == reloaded.keys()
    for key, value in saved.items():
        assert torch.equal(value, reloaded[key]), key
    with torch.no_grad():
        torch.testing.assert_close(
            _run(loaded, x, t, kwargs).sample, _run(model, x, t, kwargs).sample, rtol=0, atol=1e-6
        )
    # forward shape, finite, every trainable parameter gets a finite gradient
    out = _run(model.train(), x, t, kwargs).sample
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    # cheaper than the teacher it derives from
    given = BUILD_KWARGS.get(name, {}).get("teacher")
    teacher_config = dict(given) if isinstance(given, dict) else {}
    cls = getattr(diffusers, teacher_config.pop("_class_name", "UNet2DConditionModel"))
    teacher = cls(**teacher_config) if teacher_config else None
    if teacher is None:
        from teachers import DiffusionTeacher

        teacher = DiffusionTeacher.from_pretrained("builtin:digits").unet
    size = {"sample_size": 8} if "num_single_layers" in model.config else {}  # FLUX has no sample size
    student_macs = count_macs(model, example_inputs(model, **size)).total
    assert student_macs < count_macs(teacher, example_inputs(teacher, **size)).total


def test_the_import_example_runs_without_the_trainer():
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "import_student.py"
    code = (
        "import runpy, sys\n"
        "sys.modules['lightning'] = None\n"
        f"runpy.run_path({str(example)!r}, run_name='__main__')\n"
        "assert not [k for k in sys.modules if k.split('.')[0] == 'distill'], 'distill was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "timm_unet_digits output: (2, 1, 16, 16)" in out.stdout
    assert "reloaded: TimmUNet" in out.stdout and "my_tiny_unet:" in out.stdout
