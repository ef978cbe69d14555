"""Op handles: the MACs of one traced aten op from its operand shapes, and the category each op counts in.

The handles follow fvcore's ``jit_handles`` style (the jit Values of a node's inputs and outputs in, a MAC count
out). :data:`OP_HANDLES` lists every op we count: fvcore's handles where they are right, ours where fvcore has
none (the fused ``scaled_dot_product_attention`` family, ``baddbmm``) or is wrong (``matmul``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from fvcore.nn import jit_handles

CATEGORIES = ("conv", "linear", "matmul", "attention")

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


def einsum_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::einsum``: fvcore's count for products of two or more operands; a single-operand einsum (a
    permutation, trace or sum, e.g. SD3's unpatchify ``nhwpqc->nchpwq``) multiplies nothing, 0 MACs, where
    fvcore counts one per element."""
    operands = inputs[1].node().inputs() if inputs[1].node().kind() == "prim::ListConstruct" else None
    if operands is not None and len(list(operands)) < 2:
        return 0
    return int(jit_handles.einsum_flop_jit(inputs, outputs))


# Every op we count, in one place: fvcore's handles where they are right, ours where fvcore has none or is wrong.
OP_HANDLES: dict[str, jit_handles.Handle] = {
    "aten::_convolution": jit_handles.conv_flop_jit,
    "aten::linear": jit_handles.linear_flop_jit,
    "aten::addmm": jit_handles.addmm_flop_jit,
    "aten::mm": jit_handles.matmul_flop_jit,
    "aten::bmm": jit_handles.bmm_flop_jit,
    "aten::einsum": einsum_handle,
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
