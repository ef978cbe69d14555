"""Counting: the MACs of one forward pass, traced with fvcore plus our op handles, and torch's count beside it.

:func:`count_macs` sorts every traced aten op into a category (:mod:`distill.flops.handles`), the ignored ops
(:mod:`distill.flops.ignore`) or the uncounted ones; :func:`flop_counter_macs` is an independent count with
``torch.utils.flop_counter.FlopCounterMode``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from fvcore.nn import jit_handles
from fvcore.nn.jit_analysis import JitModelAnalysis
from torch import nn

from distill.flops.fmt import fmt_count
from distill.flops.handles import CATEGORIES, OP_CATEGORY, OP_HANDLES
from distill.flops.ignore import is_ignored_op
from distill.flops.inputs import DenoiserInputs, Positional, preserve_modes


@dataclass(frozen=True)
class MacCount:
    """MACs of one forward pass, by category, operator and module, and the ops that were not counted.

    ``by_module`` maps each module name ("" is the whole network) to its MACs by category, its descendants
    included. ``ignored`` and ``uncounted`` map aten op names to how often they ran: ignored ops have no MACs
    by definition (see :data:`SHAPE_OPS`, :data:`ELEMENTWISE_OPS`); uncounted ones are unknown to us and may
    hide real work.
    """

    by_category: dict[str, int]
    by_operator: dict[str, int]
    by_module: dict[str, dict[str, int]]
    module_params: dict[str, int]
    ignored: dict[str, int]
    uncounted: dict[str, int]
    batch_size: int = 1

    @property
    def total(self) -> int:
        return sum(self.by_category.values())

    @property
    def dense(self) -> int:
        """Conv + linear + matmul MACs (everything but fused attention)."""
        return self.total - self.by_category.get("attention", 0)

    @property
    def attention(self) -> int:
        return self.by_category.get("attention", 0)

    @property
    def parameters(self) -> int:
        return self.module_params.get("", 0)

    def table(self, *, depth: int = 1) -> str:
        """A Markdown table of MACs per module down to ``depth`` name components (modules without MACs omitted)."""
        header = "| module | params | conv | linear | matmul | attention | total | share |"
        lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
        total = max(self.total, 1)
        for name, cats in self.by_module.items():
            level = 0 if not name else name.count(".") + 1
            macs = sum(cats.values())
            if level > depth or (macs == 0 and name):
                continue
            cells = [fmt_count(cats.get(c, 0)) for c in CATEGORIES]
            lines.append(
                f"| {name or '(all)'} | {fmt_count(self.module_params.get(name, 0))} | {' | '.join(cells)} "
                f"| {fmt_count(macs)} | {100 * macs / total:.1f}% |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "dense": self.dense,
            "attention": self.attention,
            "parameters": self.parameters,
            "batch_size": self.batch_size,
            "by_category": dict(self.by_category),
            "by_operator": dict(self.by_operator),
            "ignored_ops": dict(self.ignored),
            "uncounted_ops": dict(self.uncounted),
        }


class _MacAnalysis(JitModelAnalysis):
    """fvcore's jit analysis that reports every aten op it has no handle for.

    fvcore silently drops a fixed list of ops it deems free (including clamp and max); overriding its
    ``_should_ignore_node`` (unchanged since fvcore 0.1.5) sends them to ``unsupported_ops``, where
    :func:`is_ignored_op` classifies them by our own lists.
    """

    def _should_ignore_node(self, node: Any) -> bool:
        kind = node.kind()
        return kind.startswith("prim::") and not kind.startswith(("prim::PythonOp", "prim::CallFunction"))


def _keyed(op: str, handle: jit_handles.Handle) -> jit_handles.Handle:
    def count(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
        value = handle(inputs, outputs)
        return Counter({op: int(sum(value.values()) if isinstance(value, Mapping) else value)})

    return count


def _as_call(model: nn.Module, inputs: Any) -> tuple[nn.Module, tuple[torch.Tensor, ...], str]:
    """The module to trace, its positional inputs, and the name prefix its submodules get."""
    if isinstance(inputs, DenoiserInputs):
        kw = inputs.keywords()
        return Positional(model, list(kw)), (inputs.sample, inputs.timestep, *kw.values()), "net"
    if isinstance(inputs, torch.Tensor):
        return model, (inputs,), ""
    return model, tuple(inputs), ""


def _strip(name: str, prefix: str) -> str | None:
    if not prefix:
        return name
    if name == prefix:
        return ""
    return name[len(prefix) + 1 :] if name.startswith(prefix + ".") else None


def count_macs(model: nn.Module, inputs: DenoiserInputs | torch.Tensor | Sequence[torch.Tensor]) -> MacCount:
    """Trace one forward of ``model`` on ``inputs`` with fvcore and count its MACs (batch as given).

    ``inputs`` is a :class:`DenoiserInputs` for diffusers-style denoisers (see :func:`example_inputs`) or the
    positional tensors of any other module (e.g. a timm backbone). The model runs once, in eval mode and without
    gradients; the train/eval mode of every submodule is restored afterwards.
    """
    traced, args, prefix = _as_call(model, inputs)
    analysis = _MacAnalysis(traced, args)
    analysis.set_op_handle(**{op: _keyed(op, fn) for op, fn in OP_HANDLES.items()})
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    modes = preserve_modes(model)
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_module = analysis.by_module_and_operator()
            unsupported = analysis.unsupported_ops()
    finally:
        for module, mode in modes.items():
            module.train(mode)
    return _summarise(
        model, per_module, unsupported, prefix=prefix, batch_size=int(args[0].shape[0]) if args else 1
    )


def _summarise(
    model: nn.Module,
    per_module: Mapping[str, Mapping[str, int]],
    unsupported: Mapping[str, int],
    *,
    prefix: str,
    batch_size: int,
) -> MacCount:
    by_module: dict[str, dict[str, int]] = {}
    for raw, ops in per_module.items():
        name = _strip(raw, prefix)
        if name is None:
            continue
        cats = dict.fromkeys(CATEGORIES, 0)
        for op, n in ops.items():
            cats[OP_CATEGORY[op]] += int(n)
        by_module[name] = cats
    root = per_module.get(prefix, {})
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_modules()}
    ignored = {op: n for op, n in sorted(unsupported.items()) if is_ignored_op(op)}
    uncounted = {op: n for op, n in sorted(unsupported.items()) if not is_ignored_op(op)}
    return MacCount(
        by_category=by_module.get("", dict.fromkeys(CATEGORIES, 0)),
        by_operator={op: int(n) for op, n in sorted(root.items())},
        by_module=by_module,
        module_params=params,
        ignored=ignored,
        uncounted=uncounted,
        batch_size=batch_size,
    )


def flop_counter_macs(
    model: nn.Module, inputs: DenoiserInputs | torch.Tensor | Sequence[torch.Tensor]
) -> dict[str, int]:
    """An independent count with ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2), by category.

    FlopCounterMode works below autograd, so linear layers and explicit matmuls both arrive as ``mm``/``addmm``/
    ``bmm``/``baddbmm`` and share one category, ``linear+matmul``. On CPU SDPA runs as
    ``_scaled_dot_product_flash_attention_for_cpu``, which it does not know: we map it to torch's own
    ``sdpa_flop_count``. It counts no elementwise or normalisation ops, like :func:`count_macs`.
    """
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten

    def cpu_sdpa(query, key, value, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return fc.sdpa_flop_count(query, key, value)

    category = {
        aten.convolution: "conv",
        aten._convolution: "conv",
        aten.mm: "linear+matmul",
        aten.addmm: "linear+matmul",
        aten.bmm: "linear+matmul",
        aten.baddbmm: "linear+matmul",
        aten._scaled_dot_product_flash_attention_for_cpu: "attention",
        aten._scaled_dot_product_flash_attention: "attention",
        aten._scaled_dot_product_efficient_attention: "attention",
        aten._scaled_dot_product_cudnn_attention: "attention",
    }
    traced, args, _ = _as_call(model, inputs)
    modes = preserve_modes(model)
    model.eval()
    counter = fc.FlopCounterMode(
        display=False, custom_mapping={aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    )
    try:
        with torch.no_grad(), counter:
            traced(*args)
    finally:
        for module, mode in modes.items():
            module.train(mode)
    out = {"conv": 0, "linear+matmul": 0, "attention": 0}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        if op not in category:
            raise ValueError(f"FlopCounterMode counted {op}, which has no category here")
        out[category[op]] += int(flops) // 2
    return out
