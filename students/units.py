"""Removable units of a diffusers UNet, and running the network without some of them.

A *unit* is a piece the network still computes a valid output without (SnapFusion's block evolution, BK-SDM's
block removal, stochastic depth):

- ``resnet``: a ``ResnetBlock2D`` without up/down-sampling. Without it the block's residual branch is gone and its
  output is its shortcut: the input itself, or the block's 1x1 ``conv_shortcut`` where the width changes (so every
  resnet of a UNet is removable, up-path ones included, and the skip connections still line up).
- ``attention``: a self-attention ``Attention`` with a residual connection (``Attn*Block2D``, the mid block) or a
  ``Transformer2DModel`` (``CrossAttn*Block2D``): without it the hidden states pass through unchanged.
- ``mid_block``: the whole mid block (BK-SDM's first removal): its input passes through.

:func:`removable_units` lists them in network order; :func:`skipping` runs the network without the named ones
(their forward is bypassed, not computed and discarded), for robust training and for measuring each unit's
importance; :func:`check_units` refuses names that are not units of the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

KINDS = ("resnet", "attention", "mid_block")


@dataclass(frozen=True)
class Unit:
    """One removable unit: its module path in the network and its kind (one of :data:`KINDS`)."""

    name: str
    kind: str


def _is_transformer(module: nn.Module) -> bool:
    return type(module).__name__ == "Transformer2DModel"


def _unit_kind(name: str, module: nn.Module) -> str | None:
    if name == "mid_block":
        return "mid_block"
    if isinstance(module, ResnetBlock2D):
        return None if (module.up or module.down) else "resnet"
    if isinstance(module, Attention):
        return "attention" if module.residual_connection and ".attentions." in f".{name}" else None
    if _is_transformer(module) and ".attentions." in f".{name}":
        return "attention"
    return None


def removable_units(network: nn.Module, *, kinds: Iterable[str] = KINDS) -> list[Unit]:
    """The removable units of a diffusers UNet (see the module docstring), in network order, of ``kinds``."""
    kinds = tuple(kinds)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unit kinds must be among {KINDS}, got {sorted(unknown)}")
    units = []
    for name, module in network.named_modules():
        if not name.startswith(("down_blocks.", "up_blocks.", "mid_block")):
            continue
        kind = _unit_kind(name, module)
        if kind in kinds:
            units.append(Unit(name, kind))
    if not units and "down_blocks" not in dict(network.named_children()):
        raise ValueError(
            f"removable units are found in diffusers UNets (down_blocks / mid_block / up_blocks); "
            f"{type(network).__name__} has none"
        )
    return units


def check_units(network: nn.Module, names: Iterable[str], *, argument: str = "units") -> list[Unit]:
    """The units called ``names`` in ``network``; an unknown name is refused with the valid ones."""
    by_name = {unit.name: unit for unit in removable_units(network)}
    names = list(names)
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(
            f"{argument}: {unknown} are not removable units of this {type(network).__name__}; its units are "
            f"{sorted(by_name)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"{argument}: a unit is named twice in {names}")
    return [by_name[name] for name in names]


def _bypass(module: nn.Module, kind: str):
    """A forward that computes ``module``'s output without the unit (see the module docstring)."""
    if kind == "resnet":

        def forward(input_tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            out = input_tensor
            if module.conv_shortcut is not None:
                out = module.conv_shortcut(out.contiguous())
            return out / module.output_scale_factor

        return forward
    if kind == "attention" and isinstance(module, Attention):

        def forward(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return hidden_states / module.rescale_output_factor

        return forward
    if kind == "attention":  # Transformer2DModel: the block's residual path alone

        def forward(hidden_states: torch.Tensor, *args: Any, return_dict: bool = True, **kwargs: Any):
            if not return_dict:
                return (hidden_states,)
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=hidden_states)

        return forward

    def forward(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:  # mid block
        return hidden_states

    return forward


@contextmanager
def skipping(network: nn.Module, names: Iterable[str]) -> Iterator[list[Unit]]:
    """Run ``network`` without the units called ``names`` inside the block (their modules' ``forward`` is
    bypassed; restored on exit, also on error). Yields the units."""
    units = check_units(network, names)
    modules = dict(network.named_modules())
    patched = []
    try:
        for unit in units:
            module = modules[unit.name]
            if "forward" in vars(module):
                raise RuntimeError(f"unit {unit.name} is already bypassed (nested skipping of the same unit)")
            module.forward = _bypass(module, unit.kind)
            patched.append(module)
        yield units
    finally:
        for module in patched:
            del module.forward


# -- removed for good: the modules a pruned network holds in place of its removed units ----------------------------
class ShortcutResnet(nn.Module):
    """A resnet without its residual branch: its 1x1 ``conv_shortcut`` where the width changes (the teacher's
    weights load into it under the same name), divided by the block's output scale."""

    def __init__(self, conv_shortcut: nn.Module | None, output_scale_factor: float) -> None:
        super().__init__()
        self.conv_shortcut = conv_shortcut
        self.output_scale_factor = float(output_scale_factor)

    def forward(self, input_tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = input_tensor if self.conv_shortcut is None else self.conv_shortcut(input_tensor.contiguous())
        return out / self.output_scale_factor


class Passthrough(nn.Module):
    """A removed attention or mid block: the hidden states pass (a ``Transformer2DModel`` caller gets its output
    type back)."""

    def __init__(self, *, rescale: float = 1.0, transformer_output: bool = False) -> None:
        super().__init__()
        self.rescale = float(rescale)
        self.transformer_output = transformer_output

    def forward(self, hidden_states: torch.Tensor, *args: Any, return_dict: bool = True, **kwargs: Any):
        out = hidden_states / self.rescale if self.rescale != 1.0 else hidden_states
        if not self.transformer_output:
            return out
        if not return_dict:
            return (out,)
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=out)


def replacement(module: nn.Module, kind: str) -> nn.Module:
    """What a network holds in place of the unit ``module`` once it is removed for good: it computes what
    :func:`skipping` computes."""
    if kind == "resnet":
        return ShortcutResnet(module.conv_shortcut, module.output_scale_factor)
    if kind == "attention" and isinstance(module, Attention):
        return Passthrough(rescale=module.rescale_output_factor)
    if kind == "attention":
        return Passthrough(transformer_output=True)
    return Passthrough()


def remove_units(network: nn.Module, names: Iterable[str]) -> list[Unit]:
    """Replace the units called ``names`` in ``network`` by :func:`replacement` modules (in place); a unit inside
    another removed one is refused (it goes with it)."""
    units = check_units(network, names, argument="removed_units")
    names = [u.name for u in units]
    for unit in units:
        outer = [n for n in names if unit.name.startswith(n + ".")]
        if outer:
            raise ValueError(
                f"removed_units: {unit.name} lies inside {outer[0]}, which is removed too; name one"
            )
    for unit in units:
        parent_name, _, child = unit.name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        original = (
            parent.get_submodule(child) if not isinstance(parent, nn.ModuleList) else parent[int(child)]
        )
        new = replacement(original, unit.kind)
        if isinstance(parent, nn.ModuleList):
            parent[int(child)] = new
        else:
            setattr(parent, child, new)
    return units
