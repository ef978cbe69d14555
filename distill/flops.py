"""MAC accounting for teachers and students: fvcore counting, our missing op handles, reports, latency.

One MAC is one multiply-accumulate (fvcore's "flop"; ``torch.utils.flop_counter`` counts 2 FLOPs per MAC).
:func:`count_macs` traces a network once with fvcore and counts four categories:

- ``conv``: ``aten::_convolution`` (grouped and transposed included);
- ``linear``: ``aten::linear`` / ``aten::addmm`` (fully connected layers, attention projections);
- ``matmul``: explicit products (``matmul``, ``mm``, ``bmm``, ``baddbmm``, ``einsum``): networks that write
  attention as explicit matmuls (timm's EfficientViT, diffusers' legacy ``AttnProcessor``) land here;
- ``attention``: the fused ``scaled_dot_product_attention`` family, ``B*H*Lq*Lk*(D + Dv)`` (QK^T plus AV),
  which fvcore does not count at all.

Everything else is *ignored* (elementwise, activations, softmax, normalisation, pooling, resampling and shape or
memory ops: their cost scales with activations, not with weights) and listed by name in every report; an aten
op in neither list is *uncounted* and reported as such, so nothing reads as silently zero.

This module imports torch, fvcore and (lazily) diffusers, never lightning: :func:`report_for_module` only duck-types
a method module (``.teacher.unet`` + ``.student``, or ``.model``).
"""

from __future__ import annotations

import inspect
import json
import math
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from fvcore.nn import jit_handles
from fvcore.nn.jit_analysis import JitModelAnalysis
from torch import nn

__all__ = [
    "CATEGORIES",
    "OP_CATEGORY",
    "OP_HANDLES",
    "DenoiserInputs",
    "FlopReport",
    "Latency",
    "MacCount",
    "NetworkCost",
    "count_macs",
    "default_cfg_factor",
    "example_inputs",
    "flop_counter_macs",
    "fmt_count",
    "forward_latency",
    "is_ignored_op",
    "matmul_macs",
    "measure_latency",
    "network_cost",
    "networks_of",
    "report_for_module",
    "sdpa_macs",
    "summary_metrics",
]

CATEGORIES = ("conv", "linear", "matmul", "attention")

# -- op handles ------------------------------------------------------------------------------------------------
# fvcore handles take the jit Values of a node's inputs and outputs and return a MAC count.


def _shape(value: Any) -> list[int]:
    shape = jit_handles.get_shape(value)
    if shape is None:
        raise ValueError(f"cannot count MACs: the traced value {value!r} has no complete tensor shape")
    return list(shape)


def sdpa_macs(*, query: Sequence[int], key: Sequence[int], value: Sequence[int]) -> int:
    """MACs of softmax(Q K^T) V: ``prod(batch) * Lq * Lk * D`` for Q K^T plus ``prod(batch) * Lq * Lk * Dv``.

    Batch dimensions are the query's (grouped-query attention broadcasts fewer key/value heads to them); the
    softmax, scaling and masking are elementwise and not counted; causal masks are counted dense, as torch does.
    """
    if len(query) < 2 or len(key) < 2 or len(value) < 2:
        raise ValueError(f"attention operands need at least 2 dims, got {query}, {key}, {value}")
    if query[-1] != key[-1] or key[-2] != value[-2]:
        raise ValueError(f"incompatible attention shapes: query {query}, key {key}, value {value}")
    batch = math.prod(query[:-2])
    lq, d = query[-2], query[-1]
    lk, dv = key[-2], value[-1]
    return batch * lq * lk * d + batch * lq * lk * dv


def matmul_macs(*, a: Sequence[int], b: Sequence[int]) -> int:
    """MACs of ``torch.matmul(a, b)`` with NumPy broadcasting and 1-D operands, as torch computes it."""
    a, b = list(a), list(b)
    if not a or not b:
        raise ValueError("matmul of a 0-d tensor has no MACs to count (it is a multiplication)")
    a2 = [1, *a] if len(a) == 1 else a
    b2 = [*b, 1] if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ValueError(f"incompatible matmul shapes {a} @ {b}")
    batch = torch.broadcast_shapes(tuple(a2[:-2]), tuple(b2[:-2]))
    return math.prod(batch) * a2[-2] * a2[-1] * b2[-1]


def sdpa_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::scaled_dot_product_attention`` and its kernels: inputs start (query, key, value, ...)."""
    return sdpa_macs(query=_shape(inputs[0]), key=_shape(inputs[1]), value=_shape(inputs[2]))


def baddbmm_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::baddbmm(input, batch1, batch2, beta, alpha)``: the product batch1 @ batch2 (the add is free)."""
    (n, c, t), d = _shape(inputs[1]), _shape(inputs[2])[-1]
    return n * c * t * d


def matmul_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::matmul``; replaces fvcore's, which assumes the left operand carries the batch and is >= 2-D."""
    return matmul_macs(a=_shape(inputs[0]), b=_shape(inputs[1]))


# Every op we count, in one place: fvcore's handles where they are right, ours where fvcore has none or is wrong.
OP_HANDLES: dict[str, jit_handles.Handle] = {
    "aten::_convolution": jit_handles.conv_flop_jit,
    "aten::linear": jit_handles.linear_flop_jit,
    "aten::addmm": jit_handles.addmm_flop_jit,
    "aten::mm": jit_handles.matmul_flop_jit,
    "aten::bmm": jit_handles.bmm_flop_jit,
    "aten::einsum": jit_handles.einsum_flop_jit,
    "aten::matmul": matmul_handle,
    "aten::baddbmm": baddbmm_handle,
    "aten::scaled_dot_product_attention": sdpa_handle,
    "aten::_scaled_dot_product_attention_math": sdpa_handle,
    "aten::_scaled_dot_product_flash_attention_for_cpu": sdpa_handle,
    "aten::_scaled_dot_product_flash_attention": sdpa_handle,
    "aten::_scaled_dot_product_efficient_attention": sdpa_handle,
    "aten::_scaled_dot_product_cudnn_attention": sdpa_handle,
}

OP_CATEGORY: dict[str, str] = {
    "aten::_convolution": "conv",
    "aten::linear": "linear",
    "aten::addmm": "linear",
    "aten::mm": "matmul",
    "aten::bmm": "matmul",
    "aten::baddbmm": "matmul",
    "aten::matmul": "matmul",
    "aten::einsum": "matmul",
    **{op: "attention" for op in OP_HANDLES if "scaled_dot_product" in op},
}


def _aten(names: str) -> frozenset[str]:
    return frozenset(f"aten::{name}" for name in names.split())


# Ops with no multiply-accumulate over weights or activations; matched without a trailing "_" (in-place).
SHAPE_OPS = _aten(
    # shape, view, copy, indexing, padding, creation, lookup, comparison and integer ops
    "Int ScalarImplicit size numel dim alias detach clone contiguous copy to type_as lift_fresh view reshape "
    "_unsafe_view flatten unflatten squeeze unsqueeze expand expand_as transpose t permute slice select "
    "narrow chunk split split_with_sizes unbind cat stack repeat repeat_interleave roll flip index "
    "index_select gather scatter masked_fill where pad constant_pad_nd reflection_pad2d replication_pad2d "
    "pixel_shuffle pixel_unshuffle channel_shuffle dropout feature_dropout alpha_dropout arange linspace ones "
    "zeros empty full ones_like zeros_like empty_like full_like new_zeros new_ones new_empty new_full "
    "tensor scalar_tensor embedding floor_divide remainder eq ne lt le gt ge logical_and logical_or "
    "logical_not bitwise_not __and__ __or__ floor ceil round sign"
)
ELEMENTWISE_OPS = _aten(
    # arithmetic and activations
    "add sub rsub mul div neg reciprocal abs exp log log1p sin cos tanh sqrt rsqrt pow square erf clamp "
    "clamp_min clamp_max lerp addcmul addcdiv relu relu6 leaky_relu elu gelu silu mish softplus sigmoid "
    "hardsigmoid hardswish hardtanh "
    # softmax, reductions and normalisation
    "softmax log_softmax mean sum amax amin max min var std norm linalg_vector_norm cumsum group_norm "
    "layer_norm batch_norm instance_norm rms_norm "
    # resampling and pooling
    "upsample_nearest1d upsample_nearest2d upsample_nearest3d upsample_bilinear2d upsample_bicubic2d "
    "avg_pool1d avg_pool2d max_pool1d max_pool2d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_max_pool2d"
)


def _canonical(op: str) -> str:
    return op[:-1] if op.endswith("_") and not op.endswith("__") else op


def is_ignored_op(op: str) -> bool:
    """True for ops with no MACs by our definition (elementwise, normalisation, pooling, shape, memory)."""
    name = _canonical(op)
    return name in SHAPE_OPS or name in ELEMENTWISE_OPS


# -- inputs ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DenoiserInputs:
    """The inputs of one denoiser call in the diffusers signature; None entries are not passed."""

    sample: torch.Tensor
    timestep: torch.Tensor
    encoder_hidden_states: torch.Tensor | None = None
    class_labels: torch.Tensor | None = None
    timestep_cond: torch.Tensor | None = None

    def keywords(self) -> dict[str, torch.Tensor]:
        """The conditioning inputs that are present, by keyword."""
        names = ("encoder_hidden_states", "class_labels", "timestep_cond")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @property
    def batch_size(self) -> int:
        return int(self.sample.shape[0])

    def repeat(self, times: int) -> DenoiserInputs:
        """The batch repeated ``times`` times (classifier-free guidance runs cond and uncond in one batch)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return DenoiserInputs(**{k: None if v is None else torch.cat([v] * times) for k, v in values.items()})


def _config_value(config: Any, key: str, default: Any = None) -> Any:
    return getattr(config, key, default) if config is not None else default


def _has_cross_attention(config: Any) -> bool:
    types = [
        *(_config_value(config, "down_block_types") or ()),
        *(_config_value(config, "up_block_types") or ()),
        _config_value(config, "mid_block_type") or "",
    ]
    return any("CrossAttn" in str(t) for t in types)


def _text_dim(config: Any) -> int:
    dim = _config_value(config, "encoder_hid_dim") or _config_value(config, "cross_attention_dim")
    if isinstance(dim, list | tuple):
        if len(set(dim)) != 1:
            raise ValueError(f"per-block cross_attention_dim {dim} has no single text width: pass inputs=")
        dim = dim[0]
    return int(dim)


def example_inputs(
    net: nn.Module,
    *,
    batch_size: int = 1,
    sample_size: int | tuple[int, int] | None = None,
    in_channels: int | None = None,
    text_len: int = 77,
    timestep: int = 999,
) -> DenoiserInputs:
    """Inputs for one call of a diffusers-style denoiser, read from its ``config``.

    Class labels (zeros) when it has class embeddings, text embeddings (``text_len`` tokens of
    ``cross_attention_dim``) when any block cross-attends, ``timestep_cond`` when it has ``time_cond_proj_dim``.
    ``sample_size`` and ``in_channels`` override the config (needed for networks without one).
    """
    config = getattr(net, "config", None)
    size = sample_size if sample_size is not None else _config_value(config, "sample_size")
    channels = in_channels if in_channels is not None else _config_value(config, "in_channels")
    if size is None or channels is None:
        raise ValueError(
            f"{type(net).__name__} has no diffusers config with sample_size/in_channels: "
            "pass sample_size= and in_channels= (or build DenoiserInputs yourself)"
        )
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    param = next(iter(net.parameters()), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    text = None
    if _has_cross_attention(config):
        text = randn(batch_size, text_len, _text_dim(config))
    labels = None
    if _config_value(config, "num_class_embeds"):
        labels = torch.zeros(batch_size, dtype=torch.long, device=device)
    proj_dim = _config_value(config, "time_cond_proj_dim")
    return DenoiserInputs(
        sample=randn(batch_size, int(channels), int(height), int(width)),
        timestep=torch.full((batch_size,), timestep, dtype=torch.long, device=device),
        encoder_hidden_states=text,
        class_labels=labels,
        timestep_cond=randn(batch_size, int(proj_dim)) if proj_dim else None,
    )


class _Positional(nn.Module):
    """Calls ``net(sample, timestep, **conditioning)`` from positional tensors, for jit tracing."""

    def __init__(self, net: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.net = net
        self.names = tuple(names)
        params = _forward_params(net)
        # UNet2DConditionModel takes encoder_hidden_states positionally even when it is unused.
        self.pass_none = "encoder_hidden_states" in params and "encoder_hidden_states" not in self.names

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, *conditioning: torch.Tensor
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = dict(zip(self.names, conditioning, strict=True))
        if self.pass_none:
            kwargs["encoder_hidden_states"] = None
        out = self.net(sample, timestep, **kwargs)
        if hasattr(out, "sample"):
            return out.sample
        return out[0] if isinstance(out, tuple | list) else out


def _forward_params(net: nn.Module) -> frozenset[str]:
    return frozenset(inspect.signature(type(net).forward).parameters)


# -- counting --------------------------------------------------------------------------------------------------
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


def _preserve_modes(model: nn.Module) -> dict[nn.Module, bool]:
    return {m: m.training for m in model.modules()}


def _as_call(model: nn.Module, inputs: Any) -> tuple[nn.Module, tuple[torch.Tensor, ...], str]:
    """The module to trace, its positional inputs, and the name prefix its submodules get."""
    if isinstance(inputs, DenoiserInputs):
        kw = inputs.keywords()
        return _Positional(model, list(kw)), (inputs.sample, inputs.timestep, *kw.values()), "net"
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
    modes = _preserve_modes(model)
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
    modes = _preserve_modes(model)
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


# -- latency ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Latency:
    """Wall time of one call: median of ``times_s`` after ``warmup`` untimed calls, on ``device``."""

    median_s: float
    times_s: tuple[float, ...]
    warmup: int
    threads: int
    device: str
    batch_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median_s,
            "times_s": list(self.times_s),
            "warmup": self.warmup,
            "torch_threads": self.threads,
            "device": self.device,
            "batch_size": self.batch_size,
        }


def measure_latency(
    fn: Callable[[], Any],
    *,
    warmup: int = 2,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
) -> Latency:
    """Median wall time of ``fn()`` over ``repeats`` timed calls after ``warmup`` untimed ones."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return Latency(
        median_s=statistics.median(times),
        times_s=tuple(times),
        warmup=warmup,
        threads=torch.get_num_threads(),
        device=str(device),
        batch_size=batch_size,
    )


def forward_latency(net: nn.Module, inputs: DenoiserInputs, *, warmup: int = 2, repeats: int = 5) -> Latency:
    """Latency of one no-grad eval-mode forward of ``net`` on ``inputs``."""
    call = _Positional(net, list(inputs.keywords()))
    args = (inputs.sample, inputs.timestep, *inputs.keywords().values())
    modes = _preserve_modes(net)
    net.eval()
    try:
        with torch.inference_mode():
            return measure_latency(
                lambda: call(*args),
                warmup=warmup,
                repeats=repeats,
                device=inputs.sample.device,
                batch_size=inputs.batch_size,
            )
    finally:
        for module, mode in modes.items():
            module.train(mode)


# -- reports ---------------------------------------------------------------------------------------------------
def default_cfg_factor(net: nn.Module) -> int:
    """Forwards per sampling step: 2 for a conditional network sampled with classifier-free guidance, 1 for an
    unconditional one or a guidance-distilled one (it takes the guidance scale through ``time_cond_proj_dim``)."""
    config = getattr(net, "config", None)
    if _config_value(config, "time_cond_proj_dim"):
        return 1
    conditional = bool(_config_value(config, "num_class_embeds")) or _has_cross_attention(config)
    return 2 if conditional else 1


@dataclass(frozen=True)
class NetworkCost:
    """The cost of one network in a sampler: MACs of a batch-1 forward x ``steps`` x ``cfg_factor``."""

    role: str
    macs: MacCount
    steps: int
    cfg_factor: int
    latency: Latency | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.cfg_factor not in (1, 2):
            raise ValueError(
                f"{self.role}: need steps >= 1 and cfg_factor 1 or 2, got {self.steps}, {self.cfg_factor}"
            )

    @property
    def forwards_per_sample(self) -> int:
        return self.steps * self.cfg_factor

    @property
    def macs_per_forward(self) -> int:
        return self.macs.total // self.macs.batch_size

    @property
    def macs_per_sample(self) -> int:
        return self.macs_per_forward * self.forwards_per_sample

    @property
    def latency_per_sample_s(self) -> float | None:
        """The timed step (one call at batch ``cfg_factor``, as CFG batches cond and uncond) x steps."""
        return None if self.latency is None else self.latency.median_s * self.steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "parameters": self.macs.parameters,
            "macs_per_forward": self.macs_per_forward,
            "macs_per_sample": self.macs_per_sample,
            "steps": self.steps,
            "cfg_factor": self.cfg_factor,
            "forwards_per_sample": self.forwards_per_sample,
            "macs": self.macs.to_dict(),
            "latency": None if self.latency is None else self.latency.to_dict(),
            "latency_per_sample_s": self.latency_per_sample_s,
        }


def fmt_count(n: float) -> str:
    """1234567 -> '1.23M' (K, M, G, T)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}" if isinstance(n, float) else str(n)


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


@dataclass(frozen=True)
class FlopReport:
    """Teacher vs student (or a single network): parameters, MACs per forward and per sample, latency, ratios.

    The first network is the reference; ratios are ``other / reference`` (0.25 = a quarter of the teacher's).
    """

    networks: tuple[NetworkCost, ...]
    module_depth: int | None = 1
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.networks:
            raise ValueError("a FlopReport needs at least one network")

    @property
    def reference(self) -> NetworkCost:
        return self.networks[0]

    def ratios(self) -> dict[str, float | None]:
        """``"<role>/<reference>/<quantity>"`` -> ratio, for every non-reference network."""
        ref = self.reference
        out: dict[str, float | None] = {}
        for net in self.networks[1:]:
            key = f"{net.role}/{ref.role}"
            out[f"{key}/parameters"] = _ratio(net.macs.parameters, ref.macs.parameters)
            out[f"{key}/macs_per_forward"] = _ratio(net.macs_per_forward, ref.macs_per_forward)
            out[f"{key}/macs_per_sample"] = _ratio(net.macs_per_sample, ref.macs_per_sample)
            out[f"{key}/latency_per_sample"] = _ratio(net.latency_per_sample_s, ref.latency_per_sample_s)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "networks": {n.role: n.to_dict() for n in self.networks},
            "ratios": self.ratios(),
            "mac_definition": "1 MAC = 1 multiply-accumulate (2 FLOPs); batch 1 per forward",
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def _rows(self) -> list[tuple[str, Callable[[NetworkCost], Any], bool]]:
        def latency_ms(n: NetworkCost) -> float | None:
            return None if n.latency is None else n.latency.median_s * 1e3

        return [
            ("parameters", lambda n: n.macs.parameters, True),
            ("MACs / forward (batch 1)", lambda n: n.macs_per_forward, True),
            ("&nbsp;&nbsp;conv", lambda n: n.macs.by_category["conv"] // n.macs.batch_size, True),
            ("&nbsp;&nbsp;linear", lambda n: n.macs.by_category["linear"] // n.macs.batch_size, True),
            ("&nbsp;&nbsp;matmul", lambda n: n.macs.by_category["matmul"] // n.macs.batch_size, True),
            ("&nbsp;&nbsp;attention (SDPA)", lambda n: n.macs.attention // n.macs.batch_size, True),
            ("sampling steps", lambda n: n.steps, False),
            ("forwards / step (CFG)", lambda n: n.cfg_factor, False),
            ("MACs / sample", lambda n: n.macs_per_sample, True),
            ("latency / step (ms)", latency_ms, True),
            ("latency / sample (s)", lambda n: n.latency_per_sample_s, True),
        ]

    def to_markdown(self) -> str:
        ref = self.reference
        others = self.networks[1:]
        head = ["", *(n.role for n in self.networks), *(f"{n.role} / {ref.role}" for n in others)]
        lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
        for label, get, ratio in self._rows():
            values = [get(n) for n in self.networks]
            if all(v is None for v in values):
                continue
            cells = [_cell(v) for v in values]
            cells += [_cell(_ratio(get(n), get(ref)), ratio=True) if ratio else "" for n in others]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.extend(self._footnotes())
        if self.module_depth is not None:
            for net in self.networks:
                lines += ["", f"**{net.role}** by module (depth {self.module_depth}):", ""]
                lines.append(net.macs.table(depth=self.module_depth))
        return "\n".join(lines)

    def _footnotes(self) -> list[str]:
        notes = [
            "MACs: multiply-accumulates (1 MAC = 2 FLOPs) counted with fvcore plus our handles for fused "
            "attention; MACs / sample = MACs / forward x steps x forwards per step (2 with classifier-free "
            "guidance)."
        ]
        ignored = sorted({op for n in self.networks for op in n.macs.ignored})
        if ignored:
            names = ", ".join(op.removeprefix("aten::") for op in ignored)
            notes.append(
                f"Ignored (no MACs by definition: elementwise, normalisation, pooling, shape): {names}."
            )
        uncounted = sorted({op for n in self.networks for op in n.macs.uncounted})
        if uncounted:
            notes.append(f"**Uncounted (unknown ops, may hide work): {', '.join(uncounted)}.**")
        for net in self.networks:
            if net.latency is not None:
                lat = net.latency
                notes.append(
                    f"Latency ({net.role}): median of {len(lat.times_s)} after {lat.warmup} warm-up, one call at "
                    f"batch {lat.batch_size} per step, {lat.device}, torch threads {lat.threads}."
                )
        notes.extend(self.notes)
        return [f"- {n}" for n in notes]


def _cell(value: Any, *, ratio: bool = False) -> str:
    if value is None:
        return "-"
    if ratio:
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return fmt_count(value)


# -- building reports --------------------------------------------------------------------------------------------
def network_cost(
    net: nn.Module,
    *,
    role: str,
    inputs: DenoiserInputs | None = None,
    steps: int = 1,
    cfg_factor: int | None = None,
    latency: bool = False,
    warmup: int = 2,
    repeats: int = 5,
) -> NetworkCost:
    """Count ``net`` at batch 1 (and time it at batch ``cfg_factor`` when ``latency``) on ``inputs``."""
    inputs = inputs if inputs is not None else example_inputs(net)
    cfg = cfg_factor if cfg_factor is not None else default_cfg_factor(net)
    macs = count_macs(net, inputs)
    timed = forward_latency(net, inputs.repeat(cfg), warmup=warmup, repeats=repeats) if latency else None
    return NetworkCost(role=role, macs=macs, steps=steps, cfg_factor=cfg, latency=timed)


def networks_of(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(role, network) pairs of a method module: ``.teacher.unet`` + ``.student``, or ``.model``, or itself."""
    teacher, student = getattr(module, "teacher", None), getattr(module, "student", None)
    if teacher is not None and student is not None:
        return [("teacher", getattr(teacher, "unet", teacher)), ("student", student)]
    model = getattr(module, "model", None)
    if isinstance(model, nn.Module):
        return [("model", model)]
    if getattr(module, "config", None) is not None:
        return [("model", module)]
    raise TypeError(
        f"cannot find networks to count in {type(module).__name__}: expected .teacher and .student "
        "(a distillation method), .model (DiffusionTraining) or a diffusers model"
    )


def report_for_module(
    module: nn.Module,
    *,
    steps_teacher: int = 50,
    steps_student: int = 50,
    cfg_teacher: int | None = None,
    cfg_student: int | None = None,
    latency: bool = False,
    warmup: int = 2,
    repeats: int = 5,
    module_depth: int | None = 1,
) -> FlopReport:
    """The :class:`FlopReport` of a method module (a ``.model`` alone uses the teacher's steps and CFG).

    The student is counted on the teacher's inputs (it is called exactly like the teacher's network), plus a
    ``timestep_cond`` when its config asks for one.
    """
    costs = []
    reference_inputs: DenoiserInputs | None = None
    for role, net in networks_of(module):
        is_student = role == "student"
        inputs = _student_inputs(net, reference_inputs) if is_student else example_inputs(net)
        reference_inputs = reference_inputs or inputs
        costs.append(
            network_cost(
                net,
                role=role,
                inputs=inputs,
                steps=steps_student if is_student else steps_teacher,
                cfg_factor=cfg_student if is_student else cfg_teacher,
                latency=latency,
                warmup=warmup,
                repeats=repeats,
            )
        )
    return FlopReport(networks=tuple(costs), module_depth=module_depth)


def _student_inputs(student: nn.Module, teacher_inputs: DenoiserInputs | None) -> DenoiserInputs:
    if getattr(student, "config", None) is not None or teacher_inputs is None:
        return example_inputs(student)
    return teacher_inputs


def summary_metrics(report: FlopReport) -> dict[str, float]:
    """Flat numbers for loggers: per-network MACs and params, and the ratios that are defined."""
    out: dict[str, float] = {}
    for net in report.networks:
        out[f"flops/{net.role}/macs_per_forward"] = float(net.macs_per_forward)
        out[f"flops/{net.role}/macs_per_sample"] = float(net.macs_per_sample)
        out[f"flops/{net.role}/parameters"] = float(net.macs.parameters)
    for key, value in report.ratios().items():
        if value is not None:
            out[f"flops/{key}"] = float(value)
    return out
