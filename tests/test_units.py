"""Removable units of a UNet (students.units): which they are, and that running without one computes exactly the
network whose unit contributes nothing (its residual branch zeroed)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_cond_unet
from diffusers import UNet2DConditionModel

from students.units import check_units, removable_units, skipping
from teachers.network import call_denoiser

TEXT_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=[16, 32],
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    layers_per_block=1,
    attention_head_dim=8,
    norm_num_groups=8,
    cross_attention_dim=16,
)


def _build(text: bool) -> UNet2DConditionModel:
    if text:
        torch.manual_seed(0)
        return UNet2DConditionModel(**TEXT_UNET).eval()
    return tiny_cond_unet(seed=0).eval()


def _run(network, inputs):
    with torch.no_grad():
        return call_denoiser(network, inputs["sample"], inputs["timestep"], inputs["cond"])


def _inputs(network, *, text: bool):
    gen = torch.Generator().manual_seed(0)
    c = network.config
    sample = torch.randn(3, c.in_channels, c.sample_size, c.sample_size, generator=gen)
    cond = torch.randn(3, 5, c.cross_attention_dim, generator=gen) if text else torch.tensor([1, 4, 7])
    return {"sample": sample, "timestep": torch.tensor([10.0, 500.0, 900.0]), "cond": cond}


def _zero_branch(network, name: str, kind: str) -> None:
    """Make the unit contribute nothing (what skipping it must compute)."""
    module = dict(network.named_modules())[name]
    with torch.no_grad():
        if kind == "resnet":
            module.conv2.weight.zero_()
            module.conv2.bias.zero_()
        elif hasattr(module, "to_out"):  # Attention
            module.to_out[0].weight.zero_()
            module.to_out[0].bias.zero_()
        else:  # Transformer2DModel: its output projection
            module.proj_out.weight.zero_()
            module.proj_out.bias.zero_()


def test_the_units_of_a_class_conditional_unet():
    network = tiny_cond_unet(seed=0)
    units = removable_units(network)
    names = [u.name for u in units]
    assert names[0] == "down_blocks.0.resnets.0" and "mid_block" in names
    assert {u.kind for u in units} == {"resnet", "attention", "mid_block"}
    # every resnet (up path included: its 1x1 shortcut carries the concatenated skip) and every attention
    resnets = [n for n, m in network.named_modules() if type(m).__name__ == "ResnetBlock2D"]
    assert sorted(u.name for u in units if u.kind == "resnet") == sorted(resnets)
    assert [u.name for u in removable_units(network, kinds=["attention"])] == [
        u.name for u in units if u.kind == "attention"
    ]
    with pytest.raises(ValueError, match="unit kinds must be among"):
        removable_units(network, kinds=["conv"])
    with pytest.raises(ValueError, match=r"not removable units .* its units are"):
        check_units(network, ["down_blocks.0.resnets.7"])
    with pytest.raises(ValueError, match="named twice"):
        check_units(network, [names[0], names[0]])


@pytest.mark.parametrize("text", [False, True], ids=["class-conditional", "text"])
def test_skipping_a_unit_computes_the_network_whose_unit_adds_nothing(text):
    network = _build(text)
    inputs = _inputs(network, text=text)
    full = _run(network, inputs)
    units = [u for u in removable_units(network) if u.kind != "mid_block"]
    assert {u.kind for u in units} == {"resnet", "attention"}
    for unit in units:
        with skipping(network, [unit.name]):
            skipped = _run(network, inputs)
        zeroed = _build(text)
        _zero_branch(zeroed, unit.name, unit.kind)
        torch.testing.assert_close(skipped, _run(zeroed, inputs), atol=1e-5, rtol=1e-5, msg=unit.name)
        assert not torch.allclose(skipped, full, atol=1e-4), unit.name  # every unit changes the output
    torch.testing.assert_close(_run(network, inputs), full)  # restored on exit


def test_skipping_the_mid_block_passes_its_input_and_restores_on_error():
    network = tiny_cond_unet(seed=0).eval()
    inputs = _inputs(network, text=False)
    full = _run(network, inputs)
    seen = {}
    network.mid_block.register_forward_hook(lambda m, args, out: seen.__setitem__("io", (args[0], out)))
    with skipping(network, ["mid_block"]):
        _run(network, inputs)
    assert torch.equal(seen["io"][0], seen["io"][1])
    with (
        pytest.raises(RuntimeError, match="boom"),
        skipping(network, ["mid_block", "down_blocks.0.resnets.0"]),
    ):
        raise RuntimeError("boom")
    assert "forward" not in vars(network.mid_block)
    torch.testing.assert_close(_run(network, inputs), full)
