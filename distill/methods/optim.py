"""``configure_optimizers``' return value from jsonargparse's optimizer and LR-scheduler callables."""

from __future__ import annotations

from collections.abc import Iterable

from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn


def configure(
    params: Iterable[nn.Parameter],
    optimizer: OptimizerCallable,
    lr_scheduler: LRSchedulerCallable | None,
    *,
    interval: str = "step",
):
    """One optimizer over ``params`` and an optional LR scheduler stepped every ``interval``."""
    opt = optimizer(params)
    if lr_scheduler is None:
        return opt
    return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_scheduler(opt), "interval": interval}}
