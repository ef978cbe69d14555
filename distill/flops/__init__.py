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

One module per job, all re-exported here:

- :mod:`~distill.flops.handles`: the MACs of one aten op (:data:`OP_HANDLES`) and its category;
- :mod:`~distill.flops.ignore`: the ops with no MACs by definition (:func:`is_ignored_op`);
- :mod:`~distill.flops.inputs`: example inputs of one denoiser call (:func:`example_inputs`);
- :mod:`~distill.flops.counting`: counting one forward pass (:func:`count_macs`, :func:`flop_counter_macs`);
- :mod:`~distill.flops.shapes`: counting from a config without weights (:func:`meta_network`, :func:`config_macs`);
- :mod:`~distill.flops.latency`: timing (:func:`measure_latency`, :func:`forward_latency`);
- :mod:`~distill.flops.fmt`: writing counts (:func:`fmt_count`);
- :mod:`~distill.flops.report`: teacher-vs-student reports (:func:`report_for_module`, :class:`FlopReport`).

This package imports torch and fvcore, never lightning: :func:`report_for_module` only duck-types a method
module (``.teacher.unet`` + ``.student``, or ``.model``).
"""

from __future__ import annotations

from distill.flops.counting import MacCount, count_macs, flop_counter_macs
from distill.flops.fmt import fmt_count
from distill.flops.handles import (
    CATEGORIES,
    OP_CATEGORY,
    OP_HANDLES,
    baddbmm_handle,
    matmul_handle,
    matmul_macs,
    sdpa_handle,
    sdpa_macs,
)
from distill.flops.ignore import ELEMENTWISE_OPS, SHAPE_OPS, is_ignored_op
from distill.flops.inputs import DenoiserInputs, example_inputs
from distill.flops.latency import Latency, forward_latency, measure_latency
from distill.flops.report import (
    FlopReport,
    NetworkCost,
    default_cfg_factor,
    network_cost,
    networks_of,
    report_for_module,
    summary_metrics,
)
from distill.flops.shapes import config_macs, meta_network

__all__ = [
    "CATEGORIES",
    "ELEMENTWISE_OPS",
    "OP_CATEGORY",
    "OP_HANDLES",
    "SHAPE_OPS",
    "DenoiserInputs",
    "FlopReport",
    "Latency",
    "MacCount",
    "NetworkCost",
    "baddbmm_handle",
    "config_macs",
    "count_macs",
    "default_cfg_factor",
    "example_inputs",
    "flop_counter_macs",
    "fmt_count",
    "forward_latency",
    "is_ignored_op",
    "matmul_handle",
    "matmul_macs",
    "measure_latency",
    "meta_network",
    "network_cost",
    "networks_of",
    "report_for_module",
    "sdpa_handle",
    "sdpa_macs",
    "summary_metrics",
]
