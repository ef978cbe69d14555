"""MAC accounting: every op handle against hand-computed numbers, whole networks against FlopCounterMode.

FlopCounterMode counts FLOPs = 2 x MACs below autograd, so it cannot tell a linear layer from an explicit matmul:
those two categories are compared as one sum. It does not know the CPU SDPA kernel
(``_scaled_dot_product_flash_attention_for_cpu``), so :func:`flop_counter_macs` maps it to torch's own
``sdpa_flop_count``; the MATH backend test checks the same totals without that mapping.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import tiny_cond_unet, tiny_unet2d
from fvcore.nn import jit_handles
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader, TensorDataset

from distill.flops import (
    OP_CATEGORY,
    OP_HANDLES,
    FlopReport,
    MacCount,
    NetworkCost,
    count_macs,
    default_cfg_factor,
    example_inputs,
    flop_counter_macs,
    forward_latency,
    is_ignored_op,
    matmul_macs,
    measure_latency,
    sdpa_macs,
)

ROOT = Path(__file__).resolve().parents[1]
TEACHER_CFG = ROOT / "configs" / "digits" / "teacher.yaml"
XATTN = {
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "num_class_embeds": None,
    "time_cond_proj_dim": 8,
}


# -- handles -------------------------------------------------------------------------------------------------
class _Value:
    """A stand-in for a traced jit Value (what fvcore handles receive) of a given shape."""

    def __init__(self, shape):
        self.shape = shape

    def isCompleteTensor(self):  # the jit Value API
        return self.shape is not None

    def type(self):
        return self

    def sizes(self):
        return list(self.shape)


def _node(fn, *args, kind):
    """Trace ``fn(*args)`` and return the (inputs, outputs) jit Values of its single ``kind`` node."""
    graph = torch.jit.trace(fn, args, check_trace=False).graph
    nodes = [n for n in graph.nodes() if n.kind() == kind]
    assert len(nodes) == 1, [n.kind() for n in graph.nodes()]
    return list(nodes[0].inputs()), list(nodes[0].outputs())


def _r(*shape):
    return torch.randn(*shape)


# (op, function to trace, its inputs, hand-computed MACs)
TRACED_CASES = [
    (
        "aten::_convolution",
        lambda x, w: F.conv2d(x, w, padding=1),
        (_r(2, 3, 8, 8), _r(4, 3, 3, 3)),
        2 * 4 * 3 * 9 * 8 * 8,
    ),
    (
        "aten::_convolution",
        lambda x, w: F.conv2d(x, w, stride=2, groups=3),
        (_r(1, 6, 9, 9), _r(6, 2, 3, 3)),
        1 * 6 * 2 * 9 * 4 * 4,
    ),
    (
        "aten::_convolution",
        lambda x, w: F.conv_transpose2d(x, w, stride=2),
        (_r(1, 4, 5, 5), _r(4, 3, 2, 2)),
        1 * 4 * 3 * 4 * 5 * 5,
    ),
    ("aten::linear", lambda x, w: F.linear(x, w), (_r(2, 5, 3), _r(4, 3)), 2 * 5 * 3 * 4),
    ("aten::addmm", torch.addmm, (_r(4), _r(5, 3), _r(3, 4)), 5 * 3 * 4),
    ("aten::mm", torch.mm, (_r(5, 3), _r(3, 4)), 5 * 3 * 4),
    ("aten::bmm", torch.bmm, (_r(6, 5, 4), _r(6, 4, 7)), 6 * 5 * 4 * 7),
    ("aten::baddbmm", torch.baddbmm, (_r(6, 5, 7), _r(6, 5, 4), _r(6, 4, 7)), 6 * 5 * 4 * 7),
    (
        "aten::einsum",
        lambda a, b: torch.einsum("bij,bjk->bik", a, b),
        (_r(6, 5, 4), _r(6, 4, 7)),
        6 * 5 * 4 * 7,
    ),
    ("aten::matmul", torch.matmul, (_r(6, 5, 4), _r(4, 7)), 6 * 5 * 4 * 7),
    ("aten::matmul", torch.matmul, (_r(5, 4), _r(6, 4, 7)), 6 * 5 * 4 * 7),  # broadcast on the right
    ("aten::matmul", torch.matmul, (_r(4), _r(2, 4, 7)), 2 * 4 * 7),  # 1-D left operand
    (
        "aten::scaled_dot_product_attention",
        F.scaled_dot_product_attention,
        (_r(2, 3, 5, 4), _r(2, 3, 7, 4), _r(2, 3, 7, 6)),
        2 * 3 * 5 * 7 * 4 + 2 * 3 * 5 * 7 * 6,
    ),
    (
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        lambda q, k, v: torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)[0],
        (_r(2, 3, 5, 4), _r(2, 3, 7, 4), _r(2, 3, 7, 4)),
        2 * 2 * 3 * 5 * 7 * 4,
    ),
    (
        "aten::_scaled_dot_product_attention_math",
        lambda q, k, v: torch.ops.aten._scaled_dot_product_attention_math(q, k, v)[0],
        (_r(1, 2, 3, 4), _r(1, 2, 6, 4), _r(1, 2, 6, 5)),
        2 * 3 * 6 * 4 + 2 * 3 * 6 * 5,
    ),
]
# GPU-only kernels (not runnable here): same argument layout (query, key, value, ...), fed stand-in values.
STUB_CASES = [
    (op, (1, 8, 64, 40), (1, 8, 77, 40), (1, 8, 77, 40), 8 * 64 * 77 * 40 * 2)
    for op in (
        "aten::_scaled_dot_product_flash_attention",
        "aten::_scaled_dot_product_efficient_attention",
        "aten::_scaled_dot_product_cudnn_attention",
    )
]


@pytest.mark.parametrize(("op", "fn", "args", "expected"), TRACED_CASES, ids=[c[0] for c in TRACED_CASES])
def test_handle_on_a_traced_node(op, fn, args, expected):
    inputs, outputs = _node(fn, *args, kind=op)
    macs = OP_HANDLES[op](inputs, outputs)
    assert (
        sum(macs.values()) if isinstance(macs, dict) else macs
    ) == expected  # fvcore's conv gives a Counter


@pytest.mark.parametrize(("op", "q", "k", "v", "expected"), STUB_CASES, ids=[c[0] for c in STUB_CASES])
def test_gpu_attention_kernel_handles(op, q, k, v, expected):
    assert OP_HANDLES[op]([_Value(q), _Value(k), _Value(v)], [_Value(q)]) == expected


def test_every_handle_is_tested_and_categorised():
    tested = {c[0] for c in TRACED_CASES} | {c[0] for c in STUB_CASES}
    assert tested == set(OP_HANDLES)
    assert set(OP_CATEGORY) == set(OP_HANDLES)
    assert set(OP_CATEGORY.values()) == {"conv", "linear", "matmul", "attention"}


def test_attention_and_matmul_formulas():
    # grouped-query attention: 4 query heads share 2 key/value heads; MACs follow the query heads
    assert sdpa_macs(query=(1, 4, 5, 8), key=(1, 2, 7, 8), value=(1, 2, 7, 8)) == 4 * 5 * 7 * 8 * 2
    assert sdpa_macs(query=(3, 5, 8), key=(3, 7, 8), value=(3, 7, 2)) == 3 * 5 * 7 * (8 + 2)
    assert matmul_macs(a=(4,), b=(4,)) == 4
    assert matmul_macs(a=(2, 1, 5, 4), b=(3, 4, 6)) == 2 * 3 * 5 * 4 * 6
    with pytest.raises(ValueError, match="incompatible"):
        sdpa_macs(query=(1, 5, 8), key=(1, 7, 4), value=(1, 7, 4))
    with pytest.raises(ValueError, match="incompatible matmul"):
        matmul_macs(a=(5, 4), b=(3, 6))


def test_fvcore_matmul_is_replaced_where_it_miscounts_broadcasts():
    inputs, outputs = _node(torch.matmul, _r(5, 4), _r(6, 4, 7), kind="aten::matmul")
    assert jit_handles.matmul_flop_jit(inputs, outputs) == 5 * 4 * 7  # fvcore: the batch of 6 is lost
    assert OP_HANDLES["aten::matmul"](inputs, outputs) == 6 * 5 * 4 * 7


def test_ignored_and_uncounted_ops_are_named():
    assert is_ignored_op("aten::relu_") and is_ignored_op("aten::group_norm") and is_ignored_op("aten::view")
    assert not is_ignored_op("aten::fft_rfft2") and not is_ignored_op("aten::linear")

    class Spectral(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 8)

        def forward(self, x):
            return torch.fft.rfft2(self.proj(x).relu()).abs()

    count = count_macs(Spectral(), torch.randn(2, 4, 8))
    assert count.total == count.by_category["linear"] == 2 * 4 * 8 * 8
    assert count.uncounted == {"aten::fft_rfft2": 1}
    assert {"aten::relu", "aten::abs"} <= set(count.ignored)
    cost = NetworkCost(role="net", macs=count, steps=1, cfg_factor=1)
    text = FlopReport(networks=(cost,)).to_markdown()
    assert "Uncounted (unknown ops, may hide work): aten::fft_rfft2" in text
    assert "Ignored" in text and "relu" in text and "abs" in text


# -- whole networks vs FlopCounterMode -------------------------------------------------------------------------
def _assert_matches_flop_counter(net, inputs) -> MacCount:
    ours = count_macs(net, inputs)
    ref = flop_counter_macs(net, inputs)
    assert ours.by_category["conv"] == ref["conv"] > 0
    assert ours.by_category["linear"] + ours.by_category["matmul"] == ref["linear+matmul"]
    assert ours.by_category["attention"] == ref["attention"]
    assert ours.uncounted == {}
    return ours


def test_unet2d_matches_flop_counter_and_hand_counts():
    net = tiny_unet2d()
    count = _assert_matches_flop_counter(net, example_inputs(net))
    assert count.by_module["conv_in"]["conv"] == 16 * 1 * 9 * 8 * 8  # 1 -> 16 channels, 3x3, 8x8
    # 4 self-attention layers (down 1, mid 1, up 2) at 4x4 tokens, 32 channels = 4 heads of 8: QK^T + AV
    assert count.attention == 4 * (2 * 4 * 16 * 16 * 8)
    assert count.by_category["matmul"] == 0 and "aten::group_norm" in count.ignored
    assert count.parameters == sum(p.numel() for p in net.parameters())


def test_cond_unet_with_class_labels_matches_flop_counter():
    net = tiny_cond_unet()
    count = _assert_matches_flop_counter(net, example_inputs(net))
    assert count.attention == 3 * (2 * 4 * 16 * 16 * 8)  # UNetMidBlock2D has no attention in this class


def test_cross_attention_unet_with_timestep_cond_matches_flop_counter():
    net = tiny_cond_unet(**XATTN)
    inputs = example_inputs(net, text_len=5)
    assert inputs.encoder_hidden_states.shape == (1, 5, 16) and inputs.timestep_cond.shape == (1, 8)
    assert inputs.class_labels is None
    count = _assert_matches_flop_counter(net, inputs)
    # 4 transformer blocks at 16 tokens, 4 heads of 8: self-attention 16x16 plus cross-attention 16x5 tokens
    assert count.attention == 4 * (2 * 4 * 16 * 16 * 8 + 2 * 4 * 16 * 5 * 8)


def test_math_backend_totals_agree_without_custom_mapping():
    from torch.utils.flop_counter import FlopCounterMode

    net = tiny_cond_unet(**XATTN).eval()
    inputs = example_inputs(net, text_len=5)
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), torch.no_grad(), counter:
        net(inputs.sample, inputs.timestep, **inputs.keywords())
    assert counter.get_total_flops() == 2 * count_macs(net, inputs).total


@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "efficientvit_m0"])
def test_timm_backbone_matches_flop_counter(name):
    timm = pytest.importorskip("timm")
    net = timm.create_model(name, pretrained=False, features_only=True)
    count = _assert_matches_flop_counter(net, torch.randn(1, 3, 32, 32))
    if name == "efficientvit_m0":  # its attention is explicit matmuls: category matmul, not SDPA
        assert count.by_category["matmul"] > 0 and count.attention == 0
    assert "aten::batch_norm" in count.ignored


def test_counting_restores_train_mode_and_scales_with_batch():
    net = tiny_unet2d().train()
    one = count_macs(net, example_inputs(net))
    two = count_macs(net, example_inputs(net, batch_size=2))
    assert all(m.training for m in net.modules())
    assert two.total == 2 * one.total and two.batch_size == 2


def test_example_inputs_need_a_size_for_plain_modules():
    with pytest.raises(ValueError, match="sample_size= and in_channels="):
        example_inputs(nn.Conv2d(1, 1, 1))
    inputs = example_inputs(nn.Conv2d(3, 3, 1), sample_size=(4, 6), in_channels=3)
    assert inputs.sample.shape == (1, 3, 4, 6) and inputs.keywords() == {}


def test_default_cfg_factor():
    assert default_cfg_factor(tiny_cond_unet()) == 2  # class-conditional, sampled with CFG
    assert default_cfg_factor(tiny_cond_unet(time_cond_proj_dim=8)) == 1  # guidance-distilled
    assert default_cfg_factor(tiny_unet2d(num_class_embeds=None)) == 1  # unconditional


# -- reports ---------------------------------------------------------------------------------------------------
def _count(conv, linear, attention, params):
    cats = {"conv": conv, "linear": linear, "matmul": 0, "attention": attention}
    return MacCount(
        by_category=cats,
        by_operator={},
        by_module={"": cats},
        module_params={"": params},
        ignored={"aten::silu": 3},
        uncounted={},
    )


def test_report_numbers_ratios_markdown_and_json():
    teacher = NetworkCost(role="teacher", macs=_count(600, 300, 100, 4000), steps=50, cfg_factor=2)
    student = NetworkCost(role="student", macs=_count(150, 75, 25, 1000), steps=4, cfg_factor=1)
    report = FlopReport(networks=(teacher, student), module_depth=None)
    assert teacher.macs_per_sample == 1000 * 50 * 2 and student.macs_per_sample == 250 * 4
    ratios = report.ratios()
    assert ratios["student/teacher/macs_per_forward"] == 0.25
    assert ratios["student/teacher/macs_per_sample"] == 0.01
    assert ratios["student/teacher/parameters"] == 0.25
    assert ratios["student/teacher/latency_per_sample"] is None
    text = report.to_markdown()
    assert "| teacher | student | student / teacher |" in text
    assert "| MACs / sample | 100K | 1K | 0.010 |" in text
    assert "| forwards / step (CFG) | 2 | 1 |  |" in text
    assert "latency" not in text.split("- ")[0]  # no latency rows when nothing was timed
    assert "Ignored" in text and "silu" in text
    data = json.loads(report.to_json())
    assert data["networks"]["student"]["macs_per_sample"] == 1000
    assert data["networks"]["teacher"]["macs"]["ignored_ops"] == {"aten::silu": 3}


def test_latency_is_a_median_after_warmup():
    calls = []
    lat = measure_latency(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5 and len(lat.times_s) == 3
    assert min(lat.times_s) <= lat.median_s <= max(lat.times_s)
    assert lat.threads == torch.get_num_threads() and lat.device == "cpu"
    net = tiny_cond_unet()
    timed = forward_latency(net, example_inputs(net).repeat(2), warmup=1, repeats=2)
    assert timed.batch_size == 2 and timed.median_s > 0
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_latency(lambda: None, repeats=0)


# -- the `distill flops` subcommand ----------------------------------------------------------------------------
def test_flops_subcommand_on_the_teacher_config(tmp_path, monkeypatch, capsys):
    from diffusers import UNet2DConditionModel

    from distill.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "report.json"
    main(["flops", "-c", str(TEACHER_CFG), "--steps_teacher", "25", "--output", str(out)])
    data = json.loads(out.read_text())["networks"]["model"]
    init = yaml.safe_load(TEACHER_CFG.read_text())["model"]["init_args"]["model"]["init_args"]
    net = UNet2DConditionModel(**init)
    ref = flop_counter_macs(net, example_inputs(net))
    assert data["macs_per_forward"] == sum(ref.values())
    assert data["macs"]["attention"] == ref["attention"] > 0
    assert data["parameters"] == sum(p.numel() for p in net.parameters())
    assert data["cfg_factor"] == 2 and data["macs_per_sample"] == 50 * data["macs_per_forward"]
    assert "| MACs / forward (batch 1) |" in capsys.readouterr().out
    assert not list(tmp_path.rglob("*.ckpt"))


def _kd_yaml(tmp_path, teacher_dir) -> Path:
    cfg = {
        "trainer": {"accelerator": "cpu", "logger": False},
        "model": {
            "class_path": "distill.KnowledgeDistillation",
            "init_args": {
                "teacher": {
                    "class_path": "teachers.DiffusionTeacher.from_pretrained",
                    "init_args": {"path": str(teacher_dir)},
                },
                "student": {
                    "class_path": "diffusers.UNet2DConditionModel",
                    "init_args": {**_tiny_student_kwargs()},
                },
                "samples_per_class": 0,
            },
        },
        "data": {"class_path": "distill.DigitsDataModule", "init_args": {"image_size": 8}},
    }
    path = tmp_path / "kd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _tiny_student_kwargs():
    from conftest import TINY_COND_UNET

    return {**TINY_COND_UNET, "block_out_channels": [16, 16]}


def test_flops_subcommand_on_a_kd_config(tmp_path, tiny_teacher_dir, monkeypatch, capsys):
    from distill.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "kd.json"
    args = ["--steps_student", "4", "--cfg_student", "1", "--latency", "true", "--repeats", "1"]
    main(["flops", "-c", str(_kd_yaml(tmp_path, tiny_teacher_dir)), *args, "--output", str(out)])
    data = json.loads(out.read_text())
    teacher, student = data["networks"]["teacher"], data["networks"]["student"]
    t_net, s_net = tiny_cond_unet(), tiny_cond_unet(block_out_channels=[16, 16])
    assert teacher["macs_per_forward"] == count_macs(t_net, example_inputs(t_net)).total
    assert student["macs_per_forward"] == count_macs(s_net, example_inputs(s_net)).total
    assert teacher["forwards_per_sample"] == 100 and student["forwards_per_sample"] == 4
    ratio = data["ratios"]["student/teacher/macs_per_sample"]
    assert ratio == pytest.approx(student["macs_per_forward"] * 4 / (teacher["macs_per_forward"] * 100))
    assert student["latency"]["torch_threads"] == torch.get_num_threads()
    assert teacher["latency"]["batch_size"] == 2 and student["latency"]["batch_size"] == 1
    assert "student / teacher" in capsys.readouterr().out


# -- the callback ----------------------------------------------------------------------------------------------
def test_callback_logs_table_and_ratios_to_tensorboard(tmp_path, tiny_teacher_dir):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from distill.callbacks import FlopReportCallback
    from distill.methods.knowledge import KnowledgeDistillation
    from teachers import DiffusionTeacher

    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    kd = KnowledgeDistillation(
        teacher, tiny_cond_unet(seed=5, block_out_channels=[16, 16]), samples_per_class=0
    )
    gen = torch.Generator().manual_seed(0)
    data = DataLoader(
        TensorDataset(torch.rand(8, 1, 8, 8, generator=gen), torch.arange(8) % 10), batch_size=4
    )
    callback = FlopReportCallback(steps_teacher=50, steps_student=4, cfg_student=1)
    logger = TensorBoardLogger(tmp_path, name="run", version=0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=logger,
        callbacks=[callback],
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(kd, data)
    expected = callback.report.ratios()["student/teacher/macs_per_sample"]
    assert 0 < expected < 0.04 * 1.01  # narrower student (< 1) x 4 steps instead of 50 x 2

    acc = EventAccumulator(str(tmp_path / "run" / "version_0"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    [ratio] = acc.Scalars("flops/student/teacher/macs_per_sample")
    assert ratio.step == 0 and ratio.value == pytest.approx(expected, rel=1e-6)
    [macs] = acc.Scalars("flops/teacher/macs_per_forward")
    assert macs.value == pytest.approx(callback.report.reference.macs_per_forward, rel=1e-6)
    [text] = acc.Tensors("flops/report/text_summary")
    markdown = text.tensor_proto.string_val[0].decode()
    assert "| MACs / sample |" in markdown and "student / teacher" in markdown
    hparams = yaml.safe_load((tmp_path / "run" / "version_0" / "hparams.yaml").read_text())
    assert hparams["flops/student/teacher/macs_per_sample"] == pytest.approx(expected)
