"""Small loss callables shared by the methods (EDM style: losses are tiny functions around the networks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

CONSISTENCY_LOSSES = ("huber", "l2")


def pseudo_huber(pred: torch.Tensor, target: torch.Tensor, *, c: float) -> torch.Tensor:
    """Elementwise pseudo-Huber ``sqrt((pred - target)^2 + c^2) - c``, averaged over every element (the form of
    diffusers' LCM distillation script, ``c = 0.001``); near 0 it is ``d^2 / 2c``, far from it ``|d|``."""
    if c <= 0:
        raise ValueError(f"the pseudo-Huber c must be > 0, got {c}")
    return (torch.sqrt((pred.float() - target.float()) ** 2 + c * c) - c).mean()


def consistency_loss(pred: torch.Tensor, target: torch.Tensor, *, kind: str, huber_c: float) -> torch.Tensor:
    if kind == "huber":
        return pseudo_huber(pred, target, c=huber_c)
    if kind == "l2":
        return F.mse_loss(pred.float(), target.float())
    raise ValueError(f"loss must be one of {CONSISTENCY_LOSSES}, got {kind!r}")
