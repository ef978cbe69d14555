"""Reports: the cost of each network in a sampler, teacher vs student, as Markdown, JSON and logger metrics.

:func:`report_for_module` only duck-types a method module (``.teacher.unet`` + ``.student``, or ``.model``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from distill.flops.counting import MacCount, count_macs
from distill.flops.fmt import fmt_count
from distill.flops.inputs import DenoiserInputs, config_value, example_inputs, has_cross_attention
from distill.flops.latency import Latency, forward_latency


def default_cfg_factor(net: nn.Module) -> int:
    """Forwards per sampling step: 2 for a conditional network sampled with classifier-free guidance, 1 for an
    unconditional one or a guidance-distilled one (it takes the guidance scale through ``time_cond_proj_dim``)."""
    config = getattr(net, "config", None)
    if config_value(config, "time_cond_proj_dim"):
        return 1
    conditional = bool(config_value(config, "num_class_embeds")) or has_cross_attention(config)
    return 2 if conditional else 1


@dataclass(frozen=True)
class NetworkCost:
    """The cost of one network in a sampler: MACs of a batch-1 forward x ``steps`` x ``cfg_factor``."""

    role: str
    macs: MacCount
    steps: int
    cfg_factor: int
    latency: Latency | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.cfg_factor not in (1, 2):
            raise ValueError(
                f"{self.role}: need steps >= 1 and cfg_factor 1 or 2, got {self.steps}, {self.cfg_factor}"
            )

    @property
    def forwards_per_sample(self) -> int:
        return self.steps * self.cfg_factor

    @property
    def macs_per_forward(self) -> int:
        return self.macs.total // self.macs.batch_size

    @property
    def macs_per_sample(self) -> int:
        return self.macs_per_forward * self.forwards_per_sample

    @property
    def latency_per_sample_s(self) -> float | None:
        """The timed step (one call at batch ``cfg_factor``, as CFG batches cond and uncond) x steps."""
        return None if self.latency is None else self.latency.median_s * self.steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "parameters": self.macs.parameters,
            "macs_per_forward": self.macs_per_forward,
            "macs_per_sample": self.macs_per_sample,
            "steps": self.steps,
            "cfg_factor": self.cfg_factor,
            "forwards_per_sample": self.forwards_per_sample,
            "macs": self.macs.to_dict(),
            "latency": None if self.latency is None else self.latency.to_dict(),
            "latency_per_sample_s": self.latency_per_sample_s,
        }


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


@dataclass(frozen=True)
class FlopReport:
    """Teacher vs student (or a single network): parameters, MACs per forward and per sample, latency, ratios.

    The first network is the reference; ratios are ``other / reference`` (0.25 = a quarter of the teacher's).
    """

    networks: tuple[NetworkCost, ...]
    module_depth: int | None = 1
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.networks:
            raise ValueError("a FlopReport needs at least one network")

    @property
    def reference(self) -> NetworkCost:
        return self.networks[0]

    def ratios(self) -> dict[str, float | None]:
        """``"<role>/<reference>/<quantity>"`` -> ratio, for every non-reference network."""
        ref = self.reference
        out: dict[str, float | None] = {}
        for net in self.networks[1:]:
            key = f"{net.role}/{ref.role}"
            out[f"{key}/parameters"] = _ratio(net.macs.parameters, ref.macs.parameters)
            out[f"{key}/macs_per_forward"] = _ratio(net.macs_per_forward, ref.macs_per_forward)
            out[f"{key}/macs_per_sample"] = _ratio(net.macs_per_sample, ref.macs_per_sample)
            out[f"{key}/latency_per_sample"] = _ratio(net.latency_per_sample_s, ref.latency_per_sample_s)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "networks": {n.role: n.to_dict() for n in self.networks},
            "ratios": self.ratios(),
            "mac_definition": "1 MAC = 1 multiply-accumulate (2 FLOPs); batch 1 per forward",
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def _rows(self) -> list[tuple[str, Callable[[NetworkCost], Any], bool]]:
        def latency_ms(n: NetworkCost) -> float | None:
            return None if n.latency is None else n.latency.median_s * 1e3

        return [
            ("parameters", lambda n: n.macs.parameters, True),
            ("MACs / forward (batch 1)", lambda n: n.macs_per_forward, True),
            ("&nbsp;&nbsp;conv", lambda n: n.macs.by_category["conv"] // n.macs.batch_size, True),
            ("&nbsp;&nbsp;linear", lambda n: n.macs.by_category["linear"] // n.macs.batch_size, True),
            ("&nbsp;&nbsp;matmul", lambda n: n.macs.by_category["matmul"] // n.macs.batch_size, True),
            ("&nbsp;&nbsp;attention (SDPA)", lambda n: n.macs.attention // n.macs.batch_size, True),
            ("sampling steps", lambda n: n.steps, False),
            ("forwards / step (CFG)", lambda n: n.cfg_factor, False),
            ("MACs / sample", lambda n: n.macs_per_sample, True),
            ("latency / step (ms)", latency_ms, True),
            ("latency / sample (s)", lambda n: n.latency_per_sample_s, True),
        ]

    def to_markdown(self) -> str:
        ref = self.reference
        others = self.networks[1:]
        head = ["", *(n.role for n in self.networks), *(f"{n.role} / {ref.role}" for n in others)]
        lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
        for label, get, ratio in self._rows():
            values = [get(n) for n in self.networks]
            if all(v is None for v in values):
                continue
            cells = [_cell(v) for v in values]
            cells += [_cell(_ratio(get(n), get(ref)), ratio=True) if ratio else "" for n in others]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.extend(self._footnotes())
        if self.module_depth is not None:
            for net in self.networks:
                lines += ["", f"**{net.role}** by module (depth {self.module_depth}):", ""]
                lines.append(net.macs.table(depth=self.module_depth))
        return "\n".join(lines)

    def _footnotes(self) -> list[str]:
        notes = [
            "MACs: multiply-accumulates (1 MAC = 2 FLOPs) counted with fvcore plus our handles for fused "
            "attention; MACs / sample = MACs / forward x steps x forwards per step (2 with classifier-free "
            "guidance)."
        ]
        ignored = sorted({op for n in self.networks for op in n.macs.ignored})
        if ignored:
            names = ", ".join(op.removeprefix("aten::") for op in ignored)
            notes.append(
                f"Ignored (no MACs by definition: elementwise, normalisation, pooling, shape): {names}."
            )
        uncounted = sorted({op for n in self.networks for op in n.macs.uncounted})
        if uncounted:
            notes.append(f"**Uncounted (unknown ops, may hide work): {', '.join(uncounted)}.**")
        for net in self.networks:
            if net.latency is not None:
                lat = net.latency
                notes.append(
                    f"Latency ({net.role}): median of {len(lat.times_s)} after {lat.warmup} warm-up, one call at "
                    f"batch {lat.batch_size} per step, {lat.device}, torch threads {lat.threads}."
                )
        notes.extend(self.notes)
        return [f"- {n}" for n in notes]


def _cell(value: Any, *, ratio: bool = False) -> str:
    if value is None:
        return "-"
    if ratio:
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return fmt_count(value)


# -- building reports --------------------------------------------------------------------------------------------
def network_cost(
    net: nn.Module,
    *,
    role: str,
    inputs: DenoiserInputs | None = None,
    steps: int = 1,
    cfg_factor: int | None = None,
    latency: bool = False,
    warmup: int = 2,
    repeats: int = 5,
) -> NetworkCost:
    """Count ``net`` at batch 1 (and time it at batch ``cfg_factor`` when ``latency``) on ``inputs``."""
    inputs = inputs if inputs is not None else example_inputs(net)
    cfg = cfg_factor if cfg_factor is not None else default_cfg_factor(net)
    macs = count_macs(net, inputs)
    timed = forward_latency(net, inputs.repeat(cfg), warmup=warmup, repeats=repeats) if latency else None
    return NetworkCost(role=role, macs=macs, steps=steps, cfg_factor=cfg, latency=timed)


def networks_of(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(role, network) pairs of a method module: ``.teacher.unet`` + ``.student``, or ``.model``, or itself. A
    quantization-aware student is counted as its float network (the same operations)."""
    from distill.quantization import float_network

    teacher, student = getattr(module, "teacher", None), getattr(module, "student", None)
    if teacher is not None and student is not None:
        return [("teacher", getattr(teacher, "unet", teacher)), ("student", float_network(student))]
    model = getattr(module, "model", None)
    if isinstance(model, nn.Module):
        return [("model", model)]
    if getattr(module, "config", None) is not None:
        return [("model", module)]
    raise TypeError(
        f"cannot find networks to count in {type(module).__name__}: expected .teacher and .student "
        "(a distillation method), .model (DiffusionTraining) or a diffusers model"
    )


def report_for_module(
    module: nn.Module,
    *,
    steps_teacher: int = 50,
    steps_student: int = 50,
    cfg_teacher: int | None = None,
    cfg_student: int | None = None,
    latency: bool = False,
    warmup: int = 2,
    repeats: int = 5,
    module_depth: int | None = 1,
) -> FlopReport:
    """The :class:`FlopReport` of a method module (a ``.model`` alone uses the teacher's steps and CFG).

    The student is counted on the teacher's inputs (it is called exactly like the teacher's network), plus a
    ``timestep_cond`` when its config asks for one.
    """
    costs = []
    reference_inputs: DenoiserInputs | None = None
    for role, net in networks_of(module):
        is_student = role == "student"
        inputs = _student_inputs(net, reference_inputs) if is_student else example_inputs(net)
        reference_inputs = reference_inputs or inputs
        costs.append(
            network_cost(
                net,
                role=role,
                inputs=inputs,
                steps=steps_student if is_student else steps_teacher,
                cfg_factor=cfg_student if is_student else cfg_teacher,
                latency=latency,
                warmup=warmup,
                repeats=repeats,
            )
        )
    return FlopReport(networks=tuple(costs), module_depth=module_depth)


def _student_inputs(student: nn.Module, teacher_inputs: DenoiserInputs | None) -> DenoiserInputs:
    if getattr(student, "config", None) is not None or teacher_inputs is None:
        return example_inputs(student)
    return teacher_inputs


def summary_metrics(report: FlopReport) -> dict[str, float]:
    """Flat numbers for loggers: per-network MACs and params, and the ratios that are defined."""
    out: dict[str, float] = {}
    for net in report.networks:
        out[f"flops/{net.role}/macs_per_forward"] = float(net.macs_per_forward)
        out[f"flops/{net.role}/macs_per_sample"] = float(net.macs_per_sample)
        out[f"flops/{net.role}/parameters"] = float(net.macs.parameters)
    for key, value in report.ratios().items():
        if value is not None:
            out[f"flops/{key}"] = float(value)
    return out
