"""Ignore lists: the aten ops with no MACs by our definition (elementwise, normalisation, pooling, shape, memory).

An op in neither list nor :data:`distill.flops.handles.OP_HANDLES` is reported as *uncounted*.
"""

from __future__ import annotations


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
    # arithmetic and activations (outer: a rank-1 product, one multiply per output element, e.g. RoPE tables)
    "add sub rsub mul outer div neg reciprocal abs exp log log1p sin cos tanh sqrt rsqrt pow square erf clamp "
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
