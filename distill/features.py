"""Feature hooks and weight transfer between teacher and student networks (BK-SDM style)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from teachers.transformer import block_hidden_states


def block_output(output) -> torch.Tensor:
    """The hidden states a block returns: ``output[0]`` of a diffusers down block's (hidden, residuals)."""
    if isinstance(output, tuple | list):
        output = output[0]
    if hasattr(output, "sample"):
        output = output.sample
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"cannot take a feature from a module output of type {type(output).__name__}")
    return output


def resolve(net: nn.Module, name: str, *, argument: str) -> nn.Module:
    """``net.get_submodule(name)`` with an error that lists what exists."""
    try:
        return net.get_submodule(name)
    except AttributeError:
        top = sorted({n.split(".")[0] for n, _ in net.named_modules() if n})
        blocks = sorted(
            n
            for n, _ in net.named_modules()
            if n.count(".") == 1 and n.split(".")[0] in ("down_blocks", "up_blocks", "mid_block")
        )
        raise ValueError(
            f"{argument} names module {name!r}, which does not exist; top-level modules are {top}, blocks are "
            f"{blocks}"
        ) from None


class FeatureRecorder:
    """Forward hooks that record named modules' outputs while :meth:`recording` is active."""

    def __init__(self, net: nn.Module, names: Iterable[str], *, argument: str) -> None:
        self.names = list(dict.fromkeys(names))
        self.features: dict[str, torch.Tensor] = {}
        self._active = False
        self._handles = [
            resolve(net, name, argument=argument).register_forward_hook(self._hook(name))
            for name in self.names
        ]

    def _hook(self, name: str):
        def hook(module, args, output):
            if self._active:
                self.features[name] = block_output(block_hidden_states(module, output))

        return hook

    @contextmanager
    def recording(self) -> Iterator[dict[str, torch.Tensor]]:
        self.features = {}
        self._active = True
        try:
            yield self.features
        finally:
            self._active = False

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def default_feature_pairs(teacher: nn.Module, student: nn.Module) -> list[tuple[str, str]]:
    """BK-SDM's hook points: the outputs of ``down_blocks.i`` and ``up_blocks.i`` present in both networks
    (no mid block). Students that drop whole stages should name their pairs explicitly."""
    pairs = []
    for group in ("down_blocks", "up_blocks"):
        t_blocks = getattr(teacher, group, None)
        s_blocks = getattr(student, group, None)
        if t_blocks is None or s_blocks is None:
            continue
        pairs += [(f"{group}.{i}", f"{group}.{i}") for i in range(min(len(t_blocks), len(s_blocks)))]
    return pairs


@dataclass
class TransferReport:
    """What :func:`transfer_weights` copied: tensor names and parameter counts."""

    copied: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    missing_in_source: list[str] = field(default_factory=list)
    copied_numel: int = 0
    total_numel: int = 0

    def summary(self) -> str:
        share = self.copied_numel / max(self.total_numel, 1)
        return (
            f"initialised {len(self.copied)} student tensors ({self.copied_numel:,} of {self.total_numel:,} "
            f"values, {share:.0%}) from the teacher; {len(self.shape_mismatch)} differ in shape, "
            f"{len(self.missing_in_source)} have no teacher counterpart"
        )


@torch.no_grad()
def transfer_weights(
    *, source: nn.Module, target: nn.Module, mapping: dict[str, str] | None = None
) -> TransferReport:
    """Copy every ``source`` tensor into the ``target`` tensor of the same name (after renaming prefixes by
    ``mapping``, student prefix -> teacher prefix, longest prefix first, as BK-SDM maps blocks) and the same
    shape."""
    src = source.state_dict()
    report = TransferReport()
    for name, tensor in target.state_dict().items():
        report.total_numel += tensor.numel()
        src_name = name
        matches = [p for p in (mapping or {}) if name.startswith(p + ".")]
        if matches:  # the longest (most specific) prefix wins, whatever the mapping's order
            prefix = max(matches, key=len)
            src_name = mapping[prefix] + name[len(prefix) :]
        if src_name not in src:
            report.missing_in_source.append(name)
        elif src[src_name].shape != tensor.shape:
            report.shape_mismatch.append(name)
        else:
            tensor.copy_(src[src_name].to(tensor.dtype))
            report.copied.append(name)
            report.copied_numel += tensor.numel()
    return report
