"""4-bit weights for a student's linear layers (``--quantize int4w``): torchao's 8da4w scheme for ExecuTorch.

Every ``nn.Linear`` whose input width is a multiple of the group size (attention projections, feed-forwards, the
time-embedding MLP, linear ``proj_in``/``proj_out``) gets symmetric int4 weights with one scale per ``group_size``
inputs and int8 activations quantized per token at run time (torchao's ``Int8DynamicActivationIntxWeightConfig``,
``weight_dtype=torch.int4``: the layout ExecuTorch's XNNPACK delegate runs as a dynamically quantized linear).
Convolutions, which carry most of a UNet's MACs, stay in float; :attr:`Int4WeightNetwork.skipped` names the
linears left in float and why, and the export reports the share of the forward's MACs the 4-bit layers cover.

Needs the ``deploy`` extra (torchao, executorch).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import nn

from distill.quantization import check_quantizable, require_deploy

#: what the report and the model card call the scheme
SCHEME = "int4 weights (symmetric, per group) x int8 dynamic activations (torchao 8da4w)"
DEFAULT_GROUP_SIZE = 32


@dataclass
class Int4WeightNetwork:
    """A copy of a network with 4-bit linear weights (``network``), the layers converted and those left in float."""

    network: nn.Module
    group_size: int
    quantized: list[str]
    skipped: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "scheme": SCHEME,
            "group_size": self.group_size,
            "quantized_layers": list(self.quantized),
            "float_layers": dict(self.skipped),
        }


def quantize_int4w(network: nn.Module, *, group_size: int = DEFAULT_GROUP_SIZE) -> Int4WeightNetwork:
    """A copy of ``network`` (a diffusers UNet; float32, eval) whose linear layers hold 4-bit weights.

    ``group_size`` inputs share one scale (0: one scale per output channel). ``network`` itself is not touched."""
    require_deploy()
    check_quantizable(network, argument="network")
    if group_size < 0:
        raise ValueError(f"group_size must be >= 0 (0: per output channel), got {group_size}")
    import torch
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    copied = copy.deepcopy(network).float().eval()
    chosen: list[str] = []
    skipped: dict[str, str] = {}
    for name, module in copied.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if group_size and module.in_features % group_size:
            skipped[name] = f"{module.in_features} inputs are not a multiple of the group size {group_size}"
        else:
            chosen.append(name)
    if not chosen:
        raise ValueError(
            f"{type(network).__name__} has no linear layer with a multiple of {group_size} inputs to hold 4-bit "
            "weights (try --int4w-group-size 0 for one scale per output channel, or --quantize int8)"
        )
    granularity = PerGroup(group_size) if group_size else PerAxis(0)
    config = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=granularity)
    selected = set(chosen)
    quantize_(copied, config, filter_fn=lambda module, fqn: fqn in selected)
    return Int4WeightNetwork(network=copied, group_size=group_size, quantized=chosen, skipped=skipped)
