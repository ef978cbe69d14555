"""On-device formats of a student: ExecuTorch programs (XNNPACK, fp32 and int8) and ONNX with static int8 (QDQ).

- :func:`export_executorch` lowers a network (fp32) or a converted int8 graph (:mod:`distill.quantization`) to an
  ExecuTorch ``.pte`` with the XNNPACK delegate, dynamic batch up to ``max_batch``; :class:`ExecuTorchDenoiser`
  runs it through ExecuTorch's own runtime, called like the diffusers network (larger batches in chunks).
- :func:`export_onnx_qdq` writes the int8 graph as ONNX QuantizeLinear/DequantizeLinear pairs, the scales of the
  PyTorch graph passed through (onnxruntime fuses them into int8 kernels).
- :func:`int8_macs_onnx` and :func:`delegated_macs` count how much of a forward's multiply-accumulates run in
  int8 kernels: from the ONNX QDQ graph (a Conv/Gemm/MatMul whose input and weight both come out of
  DequantizeLinear) and from the ops the ``.pte`` delegates to XNNPACK.

Needs the ``deploy`` extra (executorch, torchao) and, for ONNX, the ``export`` extra.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from distill.int4_weights import SCHEME, Int4WeightNetwork
from distill.onnx_export import PositionalDenoiser, example_inputs, input_spec
from distill.quantization import QuantizedDenoiser, capture, require_deploy
from teachers import DiffusionTeacher

PTE_NAME = "model.pte"
PTE_INT8_NAME = "model_int8.pte"
PTE_INT4W_NAME = "model_int4w.pte"
#: the report.json entry of each ExecuTorch program
VARIANTS = ("fp32", "int8", "int4w")
QDQ_NAME = "model_int8_qdq.onnx"
#: the ExecuTorch program's largest batch (its memory plan is sized for it); larger batches run in chunks
DEFAULT_MAX_BATCH = 16
MATMUL_OPS = ("conv", "linear", "mm", "bmm", "matmul", "addmm", "baddbmm")


@dataclass
class MacShare:
    """Multiply-accumulates of one forward (batch 1) by where they run."""

    total: float
    int8: float
    delegated: float | None = None

    @property
    def int8_share(self) -> float:
        return self.int8 / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, float | None]:
        return {**asdict(self), "int8_share": self.int8_share}


def _dims(shape) -> list[int]:
    out = []
    for d in shape:
        if isinstance(d, torch.SymInt):
            hint = d.node.hint
            out.append(int(hint) if hint is not None else 1)
        else:
            out.append(int(d))
    return out


def _node_macs(node: torch.fx.Node) -> float:
    """MACs of a conv / linear / matmul node from the shapes the capture recorded (0 for anything else)."""
    name = str(node.target)
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor) or not any(op in name for op in MATMUL_OPS):
        return 0.0
    out = _dims(value.shape)
    weight = node.args[1].meta.get("val") if len(node.args) > 1 and hasattr(node.args[1], "meta") else None
    if weight is None:
        return 0.0
    w = _dims(weight.shape)
    if "conv" in name:  # weight (out, in/groups, *kernel)
        return float(math.prod(out) * math.prod(w[1:]))
    if "linear" in name:  # weight (out, in)
        return float(math.prod(out) * w[-1])
    if "addmm" in name or "baddbmm" in name:
        w = _dims(node.args[2].meta["val"].shape)
        return float(math.prod(out) * w[-2])
    return float(math.prod(out) * w[-2])  # mm / bmm / matmul: (..., k, n)


def _from_dequantize(node: Any) -> bool:
    return isinstance(node, torch.fx.Node) and "dequantize" in str(node.target)


def graph_macs(graph: torch.fx.Graph, *, batch: int) -> MacShare:
    """MACs per sample of a captured graph, and those whose activation and weight inputs are both dequantized
    int8 (the conv/linear/matmul a quantized runtime runs in int8)."""
    total = int8 = 0.0
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        macs = _node_macs(node)
        total += macs
        if macs and _from_dequantize(node.args[0]) and _from_dequantize(node.args[1]):
            int8 += macs
    return MacShare(total=total / batch, int8=int8 / batch)


# -- ExecuTorch ---------------------------------------------------------------------------------------------------
def _program(network_or_graph: nn.Module, names: list[str], *, max_batch: int):
    """An ExportedProgram with a dynamic batch in [1, max_batch] from a captured graph (or a network, captured)."""
    if isinstance(network_or_graph, QuantizedDenoiser):
        graph = network_or_graph.graph
    elif isinstance(network_or_graph, torch.fx.GraphModule):
        graph = network_or_graph
    else:
        graph, names = capture(network_or_graph)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    network = (
        network_or_graph.network if isinstance(network_or_graph, QuantizedDenoiser) else network_or_graph
    )
    inputs = tuple(example_inputs(network, 2).values())
    return torch.export.export(graph, inputs, dynamic_shapes=tuple({0: batch} for _ in names))


@dataclass
class ExecuTorchReport:
    path: str
    size_bytes: int
    max_batch: int
    inputs: list[str]
    macs: dict[str, float | None]
    delegated_ops: int
    undelegated_ops: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_executorch(
    network: nn.Module, path: str | Path, *, max_batch: int = DEFAULT_MAX_BATCH
) -> ExecuTorchReport:
    """Lower ``network`` (a diffusers UNet: fp32; or a converted :class:`QuantizedDenoiser`: int8) to an ExecuTorch
    program with the XNNPACK delegate and write it to ``path``."""
    require_deploy()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    if isinstance(network, QuantizedDenoiser) and network.stage != "int8":
        raise ValueError(
            "export_executorch takes a converted int8 graph (distill.quantization.convert), not a QAT one"
        )
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    float_net = network.network if isinstance(network, QuantizedDenoiser) else network
    names = list(input_spec(float_net))
    program = _program(network.eval(), names, max_batch=max_batch)
    macs = graph_macs(program.graph, batch=2)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    delegated, undelegated = delegated_macs(edge.exported_program())
    macs.delegated = delegated
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(edge.to_executorch().buffer)
    return ExecuTorchReport(
        path=str(path),
        size_bytes=path.stat().st_size,
        max_batch=_planned_batch(path),
        inputs=names,
        macs=macs.to_dict(),
        delegated_ops=_count_delegated(edge.exported_program()),
        undelegated_ops=sorted(undelegated),
    )


def _lowered_modules(program) -> list:
    gm = program.graph_module
    return [
        getattr(gm, node.args[0].target)
        for node in gm.graph.nodes
        if node.op == "call_function" and "executorch_call_delegate" in str(node.target)
    ]


def _count_delegated(program) -> int:
    return sum(
        1
        for lowered in _lowered_modules(program)
        for node in lowered.original_module.graph.nodes
        if node.op == "call_function"
    )


def delegated_macs(program) -> tuple[float, set[str]]:
    """MACs per sample (batch 2 captured) inside XNNPACK-delegated partitions, and the names of compute ops left
    outside them (run by ExecuTorch's portable kernels)."""
    inside = 0.0
    for lowered in _lowered_modules(program):
        inside += sum(_node_macs(n) for n in lowered.original_module.graph.nodes if n.op == "call_function")
    outside = {
        str(node.target).split(".")[-2] if "." in str(node.target) else str(node.target)
        for node in program.graph_module.graph.nodes
        if node.op == "call_function"
        and "executorch_call_delegate" not in str(node.target)
        and "getitem" not in str(node.target)
    }
    return inside / 2, outside


def _planned_batch(path: Path) -> int:
    """The largest batch an ExecuTorch program's memory plan holds, read from the program itself (its first input's
    upper-bound shape; measured one below the exported range's upper bound on the digits student)."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    return int(method.metadata.input_tensor_meta(0).sizes()[0])


class ExecuTorchDenoiser(PositionalDenoiser):
    """An ExecuTorch program called like the diffusers network it came from (CPU, fp32 in and out; batches above the
    program's ``max_batch`` run in chunks)."""

    def __init__(self, path: str | Path, config: Any, *, names: list[str], max_batch: int) -> None:
        super().__init__()
        require_deploy()
        from executorch.runtime import Runtime

        self.path = Path(path)
        self.method = Runtime.get().load_program(str(self.path)).load_method("forward")
        self.config = config
        self.names = list(names)
        # what the program's memory plan holds, whatever the caller believes
        self.max_batch = min(max_batch, int(self.method.metadata.input_tensor_meta(0).sizes()[0]))
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    @classmethod
    def from_export(cls, directory: str | Path, *, variant: str = "fp32") -> ExecuTorchDenoiser:
        """From a ``distill export --format executorch`` folder (``executorch/`` beside ``unet/config.json``);
        ``variant`` picks the program: "fp32", "int8" or "int4w"."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        directory = Path(directory)
        report = json.loads((directory / "executorch" / "report.json").read_text())
        if variant not in report:
            flag = "" if variant == "fp32" else f" --quantize {variant}"
            raise FileNotFoundError(
                f"{directory / 'executorch'} holds no {variant} program; export it with --format executorch{flag}"
            )
        entry = report[variant]
        config = json.loads((directory / "unet" / "config.json").read_text())
        return cls(
            directory / "executorch" / Path(entry["path"]).name,
            SimpleNamespace(**config),
            names=entry["inputs"],
            max_batch=entry["max_batch"],
        )

    runtime = "the ExecuTorch program"

    def run(self, inputs: list[torch.Tensor], sample: torch.Tensor) -> torch.Tensor:
        batch = sample.shape[0]
        inputs = [x.detach().cpu().contiguous() for x in inputs]
        outs = []
        for start in range(0, batch, self.max_batch):
            outs.append(self.method.execute([x[start : start + self.max_batch] for x in inputs])[0])
        return torch.cat(outs).to(sample.device, sample.dtype)


def executorch_model(directory: str | Path, *, int8: bool = False, int4w: bool = False) -> DiffusionTeacher:
    """A :class:`~teachers.DiffusionTeacher` whose network is the export's ExecuTorch program (so ``distill test``
    scores the program itself: ``model: {class_path: distill.deploy.executorch_model, init_args: {directory: ...,
    int8: true}}``); ``int8`` / ``int4w`` pick the quantized program (``model_int8.pte`` / ``model_int4w.pte``)."""
    if int8 and int4w:
        raise ValueError("executorch_model: pick one of int8 and int4w")
    directory = Path(directory)
    scheduler = json.loads((directory / "scheduler" / "scheduler_config.json").read_text())
    variant = "int8" if int8 else "int4w" if int4w else "fp32"
    return DiffusionTeacher(ExecuTorchDenoiser.from_export(directory, variant=variant), scheduler)


# -- ONNX with static int8 (QDQ) -----------------------------------------------------------------------------------
def export_onnx_qdq(quantized: QuantizedDenoiser, path: str | Path, *, opset: int = 18) -> dict[str, Any]:
    """Write a converted int8 graph as ONNX (QuantizeLinear/DequantizeLinear with the graph's own scales), dynamic
    batch; returns its size and int8 MAC share."""
    from distill.onnx_export import _inline_weights, _require_onnx, onnx_size

    _require_onnx()
    if quantized.stage != "int8":
        raise ValueError("export_onnx_qdq takes a converted int8 graph (distill.quantization.convert)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = quantized.names
    batch = torch.export.Dim("batch", min=1, max=65536)
    inputs = tuple(example_inputs(quantized.network, 2).values())
    with torch.no_grad():
        torch.onnx.export(
            quantized.graph,
            inputs,
            str(path),
            input_names=names,
            output_names=["out_sample"],
            dynamic_shapes=tuple({0: batch} for _ in names),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    _inline_weights(path)
    return {"path": str(path), "size_bytes": onnx_size(path), "macs": int8_macs_onnx(path).to_dict()}


def int8_macs_onnx(path: str | Path) -> MacShare:
    """MACs per sample of an ONNX graph's Conv/Gemm/MatMul nodes, and those fed by DequantizeLinear on both the
    activation and the weight (what onnxruntime's QDQ fusion runs as int8 kernels)."""
    import onnx

    # data propagation resolves the spatial sizes behind computed Reshape/Resize shapes; without it (the export
    # keeps no value_info) most convolutions' outputs stay symbolic and would count as 1x1
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), data_prop=True)
    shapes: dict[str, list[int]] = {}
    for info in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in info.type.tensor_type.shape.dim]
        shapes[info.name] = dims
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    total = int8 = 0.0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        out = shapes.get(node.output[0])
        weight = shapes.get(node.input[1])
        if not out or not weight:
            continue
        if node.op_type == "Conv":
            macs = math.prod(out) * math.prod(weight[1:])
        elif node.op_type == "Gemm":
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            macs = math.prod(out) * (weight[1] if trans_b else weight[0])
        else:
            macs = math.prod(out) * weight[-2]
        total += macs
        if (
            producer.get(node.input[0]) == "DequantizeLinear"
            and producer.get(node.input[1]) == "DequantizeLinear"
        ):
            int8 += macs
    return MacShare(total=float(total), int8=float(int8))


# -- parity, latency and the export's deployment section --------------------------------------------------------
def _relative_rmse(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((got - ref).square().mean() / ref.square().mean().clamp_min(1e-12)).sqrt())


def _reference(network: nn.Module, names: list[str], inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    if isinstance(network, QuantizedDenoiser):
        return network.graph(*(inputs[name] for name in names))
    from distill.onnx_export import _Forward

    return _Forward(network, names).eval()(*(inputs[name] for name in names))


def _parity(network: nn.Module, run, batch_sizes: tuple[int, ...]) -> dict[str, Any]:
    """Max abs and relative RMS difference between ``run(feeds)`` (a runtime) and the PyTorch graph ``network``
    (fp32, or a converted int8 :class:`QuantizedDenoiser`) on seeded random inputs at each batch size."""
    float_net = network.network if isinstance(network, QuantizedDenoiser) else network
    names = list(input_spec(float_net))
    worst, rel = 0.0, 0.0
    with torch.no_grad():
        for i, batch in enumerate(batch_sizes):
            inputs = example_inputs(float_net, batch, seed=100 + i)
            ref = _reference(network, names, inputs)
            got = run({name: inputs[name] for name in names})
            worst = max(worst, float((got - ref).abs().max()))
            rel = max(rel, _relative_rmse(got, ref))
    return {"max_abs_error": worst, "relative_rmse": rel, "batch_sizes": list(batch_sizes)}


def onnx_parity(
    network: nn.Module, path: str | Path, batch_sizes: tuple[int, ...] = (1, 3)
) -> dict[str, Any]:
    """:func:`_parity` of onnxruntime (all optimisations: its int8 kernels) running the file at ``path``."""
    from distill.onnx_export import _session

    session = _session(Path(path))
    return _parity(
        network,
        lambda feeds: torch.from_numpy(session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]),
        batch_sizes,
    )


def executorch_parity(
    network: nn.Module, program: ExecuTorchDenoiser, batch_sizes: tuple[int, ...] = (1, 3)
) -> dict[str, Any]:
    """:func:`_parity` of ExecuTorch's runtime running ``program``."""
    return _parity(network, lambda feeds: program.method.execute(list(feeds.values()))[0], batch_sizes)


def runtime_latency(
    runners: dict[str, Any], *, repeats: int = 30, warmup: int = 3
) -> dict[str, dict[str, float]]:
    """Median and spread (min, max) of forward wall time in ms per runner, interleaved so that load affects each
    alike; ``runners`` maps a label to a no-argument callable."""
    import statistics
    import time

    times: dict[str, list[float]] = {label: [] for label in runners}
    with torch.no_grad():
        for i in range(repeats + warmup):
            for label, run in runners.items():
                start = time.perf_counter()
                run()
                if i >= warmup:
                    times[label].append((time.perf_counter() - start) * 1e3)
    return {
        label: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "repeats": len(v)}
        for label, v in times.items()
    }


def executorch_section(
    directory: Path,
    *,
    quantized: QuantizedDenoiser | None,
    max_batch: int,
    eval_samples: int = 0,
    int4w: Int4WeightNetwork | None = None,
) -> str:
    """Write ``directory/executorch/`` (``model.pte`` fp32; ``model_int8.pte`` with ``quantized``;
    ``model_int4w.pte`` with ``int4w``; ``report.json``) and return the model card's section: sizes, MACs in
    quantized kernels / delegated to XNNPACK, parity with PyTorch, latency per forward (batch 1) and per image, and
    on digits the sample quality of each file."""
    from distill.pipelines import resolve_sampler

    model = DiffusionTeacher.from_pretrained(directory)
    network = model.unet.float().eval()
    folder = directory / "executorch"
    report: dict[str, Any] = {
        "fp32": export_executorch(network, folder / PTE_NAME, max_batch=max_batch).to_dict()
    }
    programs = {
        "fp32": ExecuTorchDenoiser(
            folder / PTE_NAME, network.config, names=report["fp32"]["inputs"], max_batch=max_batch
        )
    }
    report["fp32"]["parity"] = executorch_parity(network, programs["fp32"])
    if not report["fp32"]["parity"]["max_abs_error"] <= 1e-3:
        raise ValueError(
            f"ExecuTorch's fp32 program differs from PyTorch by {report['fp32']['parity']['max_abs_error']:.3g} "
            "(max abs; allowed 1e-3); report the network"
        )
    if quantized is not None:
        report["int8"] = export_executorch(quantized, folder / PTE_INT8_NAME, max_batch=max_batch).to_dict()
        report["int8"]["origin"] = getattr(quantized, "origin", "")
        programs["int8"] = ExecuTorchDenoiser(
            folder / PTE_INT8_NAME, network.config, names=report["int8"]["inputs"], max_batch=max_batch
        )
        report["int8"]["parity"] = executorch_parity(quantized, programs["int8"])
    if int4w is not None:
        entry = export_executorch(int4w.network, folder / PTE_INT4W_NAME, max_batch=max_batch).to_dict()
        entry.update(int4w.describe())
        entry["origin"] = "post-training 4-bit weights of the linear layers (convolutions stay fp32)"
        report["int4w"] = entry
        programs["int4w"] = ExecuTorchDenoiser(
            folder / PTE_INT4W_NAME, network.config, names=entry["inputs"], max_batch=max_batch
        )
        entry["parity"] = executorch_parity(int4w.network, programs["int4w"])
    steps = 4 if resolve_sampler(model) == "consistency" else 50
    inputs = example_inputs(network, 1, seed=7)
    names = report["fp32"]["inputs"]
    feeds = [inputs[name] for name in names]
    from distill.onnx_export import _Forward

    forward = _Forward(network, names).eval()
    runners: dict[str, Any] = {"pytorch fp32": lambda: forward(*feeds)}
    for label, program in programs.items():
        runners[f"executorch {label}"] = lambda program=program: program.method.execute(feeds)
    report["latency_batch1"] = runtime_latency(runners)
    report["steps_per_image"] = steps
    torch_size = (directory / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size
    described = [
        f"`executorch/{PTE_NAME}` (fp32, max abs difference from PyTorch "
        f"{report['fp32']['parity']['max_abs_error']:.1e})"
    ]
    if quantized is not None:
        described.append(
            f"`executorch/{PTE_INT8_NAME}` (static int8 from {report['int8']['origin']}; relative RMS difference "
            f"from the PyTorch int8 graph {report['int8']['parity']['relative_rmse']:.1e})"
        )
    if int4w is not None:
        described.append(
            f"`executorch/{PTE_INT4W_NAME}` ({SCHEME}, group size {int4w.group_size or 'per channel'}, on "
            f"{len(int4w.quantized)} linear layers; {len(int4w.skipped)} linears and every convolution stay fp32; "
            f"relative RMS difference from the PyTorch 4-bit model {report['int4w']['parity']['relative_rmse']:.1e})"
        )
    lines = [
        "",
        "## ExecuTorch (XNNPACK)",
        "",
        f"Programs for ExecuTorch's runtime with the XNNPACK delegate, batch 1-{max_batch} (larger batches run in "
        f"chunks): " + " and ".join(described) + ".",
        "",
        f"| file | size | MACs quantized | MACs delegated | latency per forward (batch 1) | per image ({steps} steps) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    pytorch = report["latency_batch1"]["pytorch fp32"]["median_ms"]
    lines.append(
        f"| PyTorch (safetensors) | {torch_size / 1e6:.2f} MB | 0% | - | {pytorch:.2f} ms | {steps * pytorch:.1f} ms |"
    )
    for label in programs:
        entry = report[label]
        ms = report["latency_batch1"][f"executorch {label}"]["median_ms"]
        macs = entry["macs"]
        kind = {"int8": " (int8)", "int4w": " (4-bit weights)"}.get(label, "")
        lines.append(
            f"| `executorch/{Path(entry['path']).name}` | {entry['size_bytes'] / 1e6:.2f} MB | "
            f"{100 * macs['int8_share']:.1f}%{kind} | {100 * min(macs['delegated'] / macs['total'], 1.0):.1f}% | "
            f"{ms:.2f} ms | {steps * ms:.1f} ms |"
        )
    lines += [
        "",
        "Latency: median of 30 interleaved forwards on this machine's CPU at export time. MACs quantized: the "
        "convolution/linear/matmul MACs whose activation and weight both enter as quantized tensors.",
    ]
    if eval_samples > 0:
        from distill.onnx_export import is_digits_shaped

        if is_digits_shaped(network.config):
            report["quality"] = compare_runtimes(
                directory,
                num_samples=eval_samples,
                steps=steps,
                variants=[label for label in programs if label != "fp32"],
            )
            lines += [
                "",
                f"Samples on digits ({eval_samples}, {steps} steps, same noise and labels):",
                "",
                "| model | FID vs real | FID vs teacher ref | accuracy |",
                "| --- | ---: | ---: | ---: |",
            ]
            for label, m in report["quality"]["rows"].items():
                lines.append(
                    f"| {label} | {m['fid_real']:.3f} | {m['fid_ref']:.3f} | {100 * m['accuracy']:.1f}% |"
                )
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return "\n".join(lines) + "\n"


def compare_runtimes(
    directory: str | Path,
    *,
    num_samples: int,
    steps: int,
    variants: list[str] | tuple[str, ...] = (),
    seed: int = 0,
) -> dict:
    """FID/accuracy on digits of the PyTorch export and its ExecuTorch programs (fp32 and each of ``variants``:
    "int8", "int4w"), same noise and labels."""
    from distill.metrics import DigitsEvaluator
    from distill.pipelines import evaluate_model

    directory = Path(directory)
    evaluator = DigitsEvaluator()
    labels = torch.arange(num_samples) % 10
    models = {
        "pytorch fp32": DiffusionTeacher.from_pretrained(directory),
        "executorch fp32": executorch_model(directory),
    }
    for variant in variants:
        models[f"executorch {variant}"] = executorch_model(
            directory, int8=variant == "int8", int4w=variant == "int4w"
        )
    rows = {
        label: evaluate_model(model, evaluator, labels=labels, steps=steps, seed=seed)
        for label, model in models.items()
    }
    return {"num_samples": num_samples, "steps": steps, "seed": seed, "rows": rows}
