"""``configure_optimizers``' return value from jsonargparse's optimizer and LR-scheduler callables, and the check of
the optimizer's hyperparameters that runs at construction, before any step."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

OPTIMIZER_KEY = "model.init_args.optimizer"
EXAMPLE = "e.g. lr: 0.0005, weight_decay: 0.0"


# torch's own refusals ("Invalid learning rate: -0.001") -> the init_args key they are about
_TORCH_NAMES = {
    "learning rate": "lr",
    "weight_decay": "weight_decay",
    "epsilon": "eps",
    "beta parameter": "betas",
    "momentum value": "momentum",
    "momentum_decay": "momentum_decay",
    "alpha": "alpha",
}


def _refused(key: str, error: ValueError) -> ValueError:
    """torch's ValueError from building the optimizer, restated with the config key it is about."""
    text = str(error)
    name = next((n for phrase, n in _TORCH_NAMES.items() if f"Invalid {phrase}" in text), None)
    where = f"{key}.init_args.{name}" if name else f"{key}.init_args"
    return ValueError(f"{where}: {text}; set {where} to a valid value ({EXAMPLE})")


def _invalid(key: str, name: str, value: Any, expected: str) -> ValueError:
    return ValueError(
        f"{key}.init_args.{name} must be {expected}, got {value!r}: set {key}.init_args.{name} ({EXAMPLE})"
    )


def check_optimizer_values(optimizer: torch.optim.Optimizer, *, key: str = OPTIMIZER_KEY) -> None:
    """Refuse a built optimizer's obviously invalid hyperparameters (a negative or non-finite learning rate,
    weight decay or eps, betas outside [0, 1), negative momentum), naming the config key."""
    defaults = optimizer.defaults
    for name in ("lr", "weight_decay", "eps", "momentum"):
        value = defaults.get(name)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = float(value)
        if isinstance(value, int | float) and (not math.isfinite(value) or value < 0):
            raise _invalid(key, name, value, "a finite number >= 0")
    betas = defaults.get("betas")
    if isinstance(betas, tuple | list):
        for beta in betas:
            beta = float(beta) if isinstance(beta, torch.Tensor) and beta.numel() == 1 else beta
            if isinstance(beta, int | float) and not 0.0 <= beta < 1.0:
                raise _invalid(key, "betas", tuple(betas), "two numbers in [0, 1)")


def check_optimizer(optimizer: OptimizerCallable, *, key: str = OPTIMIZER_KEY) -> None:
    """Build ``optimizer`` over one probe parameter and check its hyperparameters, so a bad value fails at
    construction naming ``key`` rather than as a torch traceback (or silent divergence) once training starts.
    A factory that cannot be probed that way is checked when :func:`configure` builds it."""
    probe = nn.Parameter(torch.zeros(1))
    try:
        built = optimizer([probe])
    except ValueError as error:  # torch's own checks ("Invalid learning rate: -0.001")
        raise _refused(key, error) from error
    except Exception:  # e.g. a factory that expects parameter groups or a device: checked in configure()
        return
    if isinstance(built, torch.optim.Optimizer):
        check_optimizer_values(built, key=key)


def configure(
    params: Iterable[nn.Parameter],
    optimizer: OptimizerCallable,
    lr_scheduler: LRSchedulerCallable | None,
    *,
    interval: str = "step",
    key: str = OPTIMIZER_KEY,
):
    """One optimizer over ``params`` and an optional LR scheduler stepped every ``interval``."""
    try:
        opt = optimizer(params)
    except ValueError as error:
        raise _refused(key, error) from error
    if isinstance(opt, torch.optim.Optimizer):
        check_optimizer_values(opt, key=key)
    if lr_scheduler is None:
        return opt
    return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_scheduler(opt), "interval": interval}}
