"""What each removable unit of a network is worth: the quality lost without it and the compute it costs.

:func:`measure_importance` skips each unit in turn (:func:`students.units.skipping`) and scores the network with a
quality proxy, lower is better:

- :class:`DigitsFidProxy`: FID against the digits teacher reference of a few hundred samples (the evaluator the
  data has; the same noise for every unit).
- :class:`SampleDistanceProxy`: any teacher (class-conditional, text, latent): how far the samples move from the
  full network's own samples from the same noise and conditions (mean squared difference over the full samples'
  variance), the evaluator-free stand-in for "FID vs the teacher's own samples".

Each unit's cost is what removing it saves: MACs per forward (from one count of the network by module; equal to
counting the network without the unit) and, with ``latency=True``, the unit's own wall time inside a batch-1 forward on this machine (median of
interleaved repeats: SnapFusion's per-block latency table).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from students.units import Unit, check_units, removable_units, skipping


class QualityProxy(Protocol):
    """Scores a sampler (lower is better); ``name`` says what it measures."""

    name: str

    def __call__(self, model: Any) -> float: ...


class DigitsFidProxy:
    """FID vs the digits teacher reference of ``num_samples`` samples at ``steps`` (balanced labels, noise keyed on
    ``(seed, index)``)."""

    def __init__(self, num_samples: int = 300, steps: int = 20, seed: int = 0, evaluator: Any = None) -> None:
        if num_samples < 10 or steps < 1:
            raise ValueError(
                f"DigitsFidProxy needs num_samples >= 10 and steps >= 1, got {num_samples}, {steps}"
            )
        from distill.metrics import DigitsEvaluator

        self.evaluator = evaluator if evaluator is not None else DigitsEvaluator()
        self.num_samples, self.steps, self.seed = int(num_samples), int(steps), int(seed)
        self.name = f"FID vs the teacher reference ({self.num_samples} samples, {self.steps} DDIM steps)"

    def __call__(self, model: Any) -> float:
        from distill.pipelines import evaluate_model

        labels = torch.arange(self.num_samples) % 10
        return float(
            evaluate_model(model, self.evaluator, labels=labels, steps=self.steps, seed=self.seed)["fid_ref"]
        )


class SampleDistanceProxy:
    """Mean squared difference between the samples and the full network's samples from the same noise and
    conditions, over the full samples' variance (0: unchanged; about 2: unrelated samples of the same spread).

    ``prompts`` condition a text teacher (they are encoded once); class teachers get balanced labels."""

    def __init__(
        self, num_samples: int = 16, steps: int = 10, seed: int = 0, prompts: Sequence[str] | None = None
    ) -> None:
        if num_samples < 1 or steps < 1:
            raise ValueError(
                f"SampleDistanceProxy needs num_samples >= 1 and steps >= 1, got {num_samples}, {steps}"
            )
        self.num_samples, self.steps, self.seed = int(num_samples), int(steps), int(seed)
        self.prompts = list(prompts) if prompts else None
        self.name = f"sample distance to the full network ({self.num_samples} samples, {self.steps} steps)"
        self._reference: torch.Tensor | None = None

    def _cond(self, model: Any):
        if model.cond_kind == "class":
            return torch.arange(self.num_samples) % int(model.num_classes)
        if model.cond_kind is None:
            return None
        prompts = self.prompts or ["a photo"]
        texts = [prompts[i % len(prompts)] for i in range(self.num_samples)]
        return model.encode_prompt(texts)

    def samples(self, model: Any) -> torch.Tensor:
        from distill.pipelines import sample_images

        idx = torch.arange(self.num_samples)
        with torch.no_grad():
            return sample_images(
                model,
                labels=self._cond(model),
                seeds=torch.full_like(idx, self.seed),
                indices=idx,
                steps=self.steps,
            ).float()

    def reset(self, model: Any) -> None:
        """Take ``model``'s current network as the full one (its samples are the reference)."""
        self._reference = self.samples(model)

    def __call__(self, model: Any) -> float:
        if self._reference is None:
            self.reset(model)
        got = self.samples(model)
        ref = self._reference
        return float(((got - ref) ** 2).mean() / ref.var().clamp_min(1e-12))


@dataclass
class UnitImportance:
    name: str
    kind: str
    #: the proxy's score without the unit, and its change from the full network's
    score: float
    delta: float
    #: MACs per forward (batch 1) the network saves without the unit
    macs_saved: float
    #: the unit's own median wall time inside a batch-1 forward (ms), when measured
    latency_ms: float | None = None


@dataclass
class ImportanceReport:
    proxy: str
    base_score: float
    total_macs: float
    units: list[UnitImportance] = field(default_factory=list)
    latency_total_ms: float | None = None

    def ranking(self) -> list[str]:
        """Unit names from the least to the most harmful to remove."""
        return [u.name for u in sorted(self.units, key=lambda u: u.delta)]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ranking": self.ranking()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportanceReport:
        """The report :meth:`to_dict` wrote (``distill prune --out``)."""
        fields = {"proxy", "base_score", "total_macs", "latency_total_ms"}
        units = [UnitImportance(**u) for u in data["units"]]
        return cls(**{k: data.get(k) for k in fields}, units=units)


def network_macs(network: nn.Module, skipped: Sequence[str] = ()) -> float:
    """MACs of one batch-1 forward of ``network`` without the units ``skipped`` (fvcore and our handles)."""
    from distill.flops import count_macs, example_inputs

    with skipping(network, skipped):
        return float(count_macs(network, example_inputs(network)).total)


def unit_macs_saved(network: nn.Module, units: Sequence[Unit]) -> tuple[float, dict[str, float]]:
    """The forward's MACs (batch 1) and what removing each unit saves, from one count: the unit's own MACs, less
    its 1x1 shortcut's for a resnet that changes width (the shortcut stays)."""
    from distill.flops import count_macs, example_inputs

    count = count_macs(network, example_inputs(network))

    def macs(name: str) -> float:
        return float(sum(count.by_module.get(name, {}).values()))

    saved = {}
    for unit in units:
        keep = f"{unit.name}.conv_shortcut" if unit.kind == "resnet" else None
        saved[unit.name] = macs(unit.name) - (macs(keep) if keep else 0.0)
    return float(count.total), saved


def batch1_forward(network: nn.Module):
    """A no-argument call of ``network``'s forward at batch 1 on :func:`distill.flops.example_inputs` (what the
    latency measurements time)."""
    from distill.flops import example_inputs
    from teachers.network import call_denoiser

    inputs = example_inputs(network)
    cond = inputs.class_labels if inputs.class_labels is not None else inputs.encoder_hidden_states
    return lambda: call_denoiser(
        network, inputs.sample, inputs.timestep, cond, timestep_cond=inputs.timestep_cond
    )


def unit_latency(network: nn.Module, units: Sequence[Unit], *, repeats: int = 30, warmup: int = 3) -> dict:
    """Each unit's own median wall time (ms) inside batch-1 forwards of ``network``, and the whole forward's."""
    modules = dict(network.named_modules())
    started: dict[str, float] = {}
    times: dict[str, list[float]] = {u.name: [] for u in units}
    handles = []
    for unit in units:
        module = modules[unit.name]
        handles.append(
            module.register_forward_pre_hook(
                lambda m, a, name=unit.name: started.__setitem__(name, time.perf_counter())
            )
        )
        handles.append(
            module.register_forward_hook(
                lambda m, a, o, name=unit.name: times[name].append(
                    (time.perf_counter() - started[name]) * 1e3
                )
            )
        )
    forward = batch1_forward(network)
    total: list[float] = []
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                forward()
                total.append((time.perf_counter() - start) * 1e3)
                if i < warmup:
                    for values in times.values():
                        values.clear()
                    total.clear()
    finally:
        for handle in handles:
            handle.remove()
    return {
        "units": {name: statistics.median(v) for name, v in times.items()},
        "total": statistics.median(total),
    }


def measure_importance(
    model: Any,
    proxy: QualityProxy,
    *,
    units: Sequence[str] | None = None,
    latency: bool = False,
    repeats: int = 30,
) -> ImportanceReport:
    """Score ``model`` (a :class:`teachers.DiffusionTeacher`; its ``unet`` is the network measured) with each of
    ``units`` (default: every removable unit) skipped in turn; see the module docstring."""
    network = model.unet
    chosen = check_units(network, units) if units is not None else removable_units(network)
    if hasattr(proxy, "reset"):
        proxy.reset(model)
    was_training = network.training
    network.eval()
    try:
        base = proxy(model)
        total, saved = unit_macs_saved(network, chosen)
        timing = unit_latency(network, chosen, repeats=repeats) if latency else None
        scored = []
        for unit in chosen:
            with skipping(network, [unit.name]):
                score = proxy(model)
            scored.append(
                UnitImportance(
                    name=unit.name,
                    kind=unit.kind,
                    score=score,
                    delta=score - base,
                    macs_saved=saved[unit.name],
                    latency_ms=timing["units"][unit.name] if timing else None,
                )
            )
    finally:
        network.train(was_training)
    return ImportanceReport(
        proxy=proxy.name,
        base_score=base,
        total_macs=total,
        units=scored,
        latency_total_ms=timing["total"] if timing else None,
    )
