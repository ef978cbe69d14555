"""Latency: the median wall time of a call, and of one no-grad eval-mode forward of a denoiser."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distill.flops.inputs import DenoiserInputs, Positional, preserve_modes


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
    call = Positional(net, list(inputs.keywords()))
    args = (inputs.sample, inputs.timestep, *inputs.keywords().values())
    modes = preserve_modes(net)
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
