"""Counting networks too large for this machine from their config alone: weights never materialised.

FLUX.1 (12B parameters) does not fit 24 GB in fp32. :func:`config_macs` builds the network on the ``meta`` device
(no storage), moves it to fake CPU tensors (``FakeTensorMode``: shapes and dtypes, no data, the CPU kernels'
dispatch, so scaled-dot-product attention arrives as the CPU flash op) and counts one forward with
``torch.utils.flop_counter`` (:func:`distill.flops.flop_counter_macs`), whose categories the fvcore count equals
exactly on the same architectures at small size (tests/test_transformer_teachers.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from distill.flops.counting import flop_counter_macs
from distill.flops.inputs import example_inputs


def meta_network(class_name: str, config: Mapping[str, Any]) -> nn.Module:
    """The diffusers class ``class_name`` built from ``config`` on the meta device (no weights allocated)."""

    from students import loadable_classes

    classes = loadable_classes()
    if class_name not in classes:
        raise ValueError(f"{class_name!r} is not a denoiser class this library loads: {sorted(classes)}")
    with torch.device("meta"):
        return classes[class_name].from_config({k: v for k, v in config.items() if not k.startswith("_")})


def config_macs(
    net: nn.Module, *, sample_size: int | None = None, text_len: int | None = None
) -> dict[str, Any]:
    """``{"parameters", "macs": {category: n}, "total"}`` of one batch-1 forward of a meta-device ``net`` (from
    :func:`meta_network`) at latent ``sample_size`` with :func:`example_inputs`'s conditioning."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    parameters = sum(p.numel() for p in net.parameters())
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = net.to_empty(device="cpu")
        macs = flop_counter_macs(fake, example_inputs(fake, sample_size=sample_size, text_len=text_len))
    return {"parameters": int(parameters), "macs": macs, "total": int(sum(macs.values()))}
