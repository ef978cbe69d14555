"""Exponential moving average of a network's weights, as a submodule that checkpoints with its owner."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """A frozen copy of ``model`` tracking ``decay``-weighted averages of its parameters.

    With ``warmup`` the effective decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as diffusers'
    EMAModel), so early averages are not dominated by the initialisation. Buffers are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        n = int(self.num_updates)
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        if len(ema_params) != len(params):
            raise RuntimeError("EMA copy and model have different parameter lists")
        torch._foreach_lerp_(
            ema_params, [p.to(e.dtype) for p, e in zip(params, ema_params, strict=True)], 1.0 - decay
        )
        copy_buffers(self.module, model)
        self.num_updates += 1

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


@torch.no_grad()
def copy_buffers(target: nn.Module, source: nn.Module) -> None:
    """Copy ``source``'s buffers into ``target``'s (same structure). A buffer whose shape differs is resized first:
    quantization observers' ranges start empty and take their shape from the first batch they see."""
    for dst, src in zip(target.buffers(), source.buffers(), strict=True):
        if dst.shape != src.shape:
            dst.resize_(src.shape)
        dst.copy_(src)
