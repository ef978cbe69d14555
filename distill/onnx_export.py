"""ONNX export of a student's forward (dynamic batch), checked in onnxruntime, optional int8, and sampling from it.

``export_onnx`` traces the network with ``torch.onnx.export(dynamo=True)``, reloads the file in onnxruntime and
compares it with PyTorch at batch sizes other than the traced one (max abs error, refused above ``atol``).
``quantize_int8`` applies onnxruntime's dynamic int8 quantisation (weights int8, activations quantised at run
time). ``OnnxDenoiser`` wraps a session as a network our samplers call, so ``distill.pipelines.sample_images``
draws the same images from the ONNX file as from the PyTorch export (the int8 FID change is measured that way).

Needs the ``export`` extra: ``pip install "distill-diffusion[export]"`` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from teachers.network import call_denoiser

ONNX_NAME = "model.onnx"
INT8_NAME = "model_int8.onnx"
DEFAULT_OPSET = 18


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as error:  # pragma: no cover - the export extra is installed in CI
        raise ImportError(
            'ONNX export needs onnx, onnxscript and onnxruntime: pip install "distill-diffusion[export]"'
        ) from error
    return onnx, onnxruntime


@dataclass
class OnnxReport:
    """What an export wrote and how close it is to PyTorch."""

    path: str
    opset: int
    size_bytes: int
    inputs: dict[str, list]
    max_abs_error: float
    checked_batch_sizes: list[int]
    latency_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def input_spec(unet: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape without batch, dtype) of the inputs the network's config calls for."""
    config = unet.config
    size = config.sample_size
    size = tuple(size) if isinstance(size, list | tuple) else (size, size)
    spec: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
        "sample": ((config.in_channels, *size), torch.float32),
        # float, so one graph serves integer DDPM timesteps and flow matching's s * T exactly
        "timestep": ((), torch.float32),
    }
    if getattr(config, "num_class_embeds", None):
        spec["class_labels"] = ((), torch.int64)
    blocks = list(getattr(config, "down_block_types", ())) + list(getattr(config, "up_block_types", ()))
    if any("CrossAttn" in block for block in blocks):
        spec["encoder_hidden_states"] = ((77, config.cross_attention_dim), torch.float32)
    if getattr(config, "time_cond_proj_dim", None):
        spec["timestep_cond"] = ((config.time_cond_proj_dim,), torch.float32)
    return spec


def example_inputs(unet: nn.Module, batch_size: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of the right shapes and ranges (timesteps in the training range, valid class ids)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, (shape, dtype) in input_spec(unet).items():
        if name == "timestep":
            high = int(getattr(unet.config, "num_train_timesteps", 1000) or 1000)
            out[name] = torch.rand(batch_size, generator=gen) * high
        elif name == "class_labels":
            out[name] = torch.randint(0, unet.config.num_class_embeds, (batch_size,), generator=gen)
        else:
            out[name] = torch.randn((batch_size, *shape), generator=gen, dtype=dtype)
    return out


def positional_inputs(
    names: list[str],
    sample: torch.Tensor,
    timestep: torch.Tensor,
    *,
    encoder_hidden_states: torch.Tensor | None = None,
    class_labels: torch.Tensor | None = None,
    timestep_cond: torch.Tensor | None = None,
    time_dtype: torch.dtype = torch.float32,
    runtime: str = "the exported network",
) -> list[torch.Tensor]:
    """A diffusers-style call's inputs in an exported graph's ``names`` order (fp32 sample, one timestep per sample
    in ``time_dtype``); a missing input is named."""
    batch = sample.shape[0]
    given = {
        "sample": sample.float(),
        "timestep": torch.as_tensor(timestep, device=sample.device).to(time_dtype).reshape(-1).expand(batch),
        "class_labels": class_labels,
        "encoder_hidden_states": encoder_hidden_states,
        "timestep_cond": timestep_cond,
    }
    missing = [name for name in names if given[name] is None]
    if missing:
        raise ValueError(f"{runtime} needs inputs {missing}; the caller passed none")
    return [given[name] for name in names]


class PositionalDenoiser(nn.Module):
    """A network called like diffusers' (``sample, timestep, encoder_hidden_states=..., class_labels=...,
    timestep_cond=...``) that runs an exported graph over positional inputs in ``self.names`` order: subclasses set
    ``names`` (and ``time_dtype``, ``runtime``) and implement :meth:`run`."""

    names: list[str]
    time_dtype: torch.dtype = torch.float32
    runtime: str = "the exported network"

    def run(self, inputs: list[torch.Tensor], sample: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        return_dict: bool = False,
    ) -> torch.Tensor:
        inputs = positional_inputs(
            self.names,
            sample,
            timestep,
            encoder_hidden_states=encoder_hidden_states,
            class_labels=class_labels,
            timestep_cond=timestep_cond,
            time_dtype=self.time_dtype,
            runtime=self.runtime,
        )
        return self.run(inputs, sample)


class _Forward(nn.Module):
    """Positional inputs in ``names`` order -> the output tensor (what the ONNX graph computes)."""

    def __init__(self, unet: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.unet = unet
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(self.names, inputs, strict=True))
        cond = kwargs.get("class_labels", kwargs.get("encoder_hidden_states"))
        return call_denoiser(
            self.unet, kwargs["sample"], kwargs["timestep"], cond, timestep_cond=kwargs.get("timestep_cond")
        )


def _session(path: Path, threads: int | None = None, *, spin: bool = True):
    _, ort = _require_onnx()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spin:  # idle threads sleep instead of spinning (fair when timing interleaved with PyTorch)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_abs_error(unet: nn.Module, path: Path, batch_sizes: tuple[int, ...] = (1, 3)) -> float:
    """Largest |onnxruntime - PyTorch| over random inputs at each batch size."""
    session = _session(path)
    names = list(input_spec(unet))
    worst = 0.0
    with torch.no_grad():
        for i, batch in enumerate(batch_sizes):
            inputs = example_inputs(unet, batch, seed=100 + i)
            ref = _Forward(unet, names).eval()(*inputs.values())
            got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
            worst = max(worst, float((torch.from_numpy(got) - ref).abs().max()))
    return worst


def export_onnx(
    unet: nn.Module,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
    check_batch_sizes: tuple[int, ...] = (1, 3),
) -> OnnxReport:
    """Write ``unet``'s forward (fp32, dynamic batch) to ``path`` and check it in onnxruntime.

    Raises ``ValueError`` naming the error if onnxruntime differs from PyTorch by more than ``atol``.
    """
    _require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    unet = unet.float().eval()
    names = list(input_spec(unet))
    batch = torch.export.Dim("batch", min=1, max=65536)
    inputs = example_inputs(unet, 2)
    with torch.no_grad():
        torch.onnx.export(
            _Forward(unet, names).eval(),
            tuple(inputs.values()),
            str(path),
            input_names=names,
            output_names=["out_sample"],
            dynamic_shapes=(tuple({0: batch} for _ in names),),  # forward(*inputs): one varargs tuple
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    _inline_weights(path)
    error = max_abs_error(unet, path, check_batch_sizes)
    if not error <= atol:
        raise ValueError(
            f"onnxruntime differs from PyTorch by {error:.3g} (max abs) on {path}; the export check allows "
            f"{atol:g}. Try another opset (--onnx_opset) or report the network."
        )
    spec = input_spec(unet)
    return OnnxReport(
        path=str(path),
        opset=opset,
        size_bytes=onnx_size(path),
        inputs={name: ["batch", *shape] for name, (shape, _) in spec.items()},
        max_abs_error=error,
        checked_batch_sizes=list(check_batch_sizes),
    )


def onnx_size(path: Path) -> int:
    """Bytes of an ONNX file plus its external weights file, if any."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _inline_weights(path: Path, limit: int = 2**31 - 2**26) -> None:
    """Store the weights inside the ``.onnx`` file (one file to ship) when the model fits protobuf's 2 GB (larger
    models keep the exporter's external ``.data`` file), without the exporter's per-node debugging metadata."""
    import onnx

    data = path.with_name(path.name + ".data")
    if data.exists() and data.stat().st_size > limit:
        return
    model = onnx.load(str(path))  # reads the external weights
    for (
        node
    ) in model.graph.node:  # the exporter's per-node stack traces and module paths: debugging, not shipping
        del node.metadata_props[:]
        node.doc_string = ""
    # the exporter's shape annotations of every intermediate value (optional: onnxruntime infers them at load;
    # about a fifth of a small int8 QDQ graph)
    model.graph.ClearField("value_info")
    onnx.save_model(model, str(path), save_as_external_data=False)
    if data.exists():
        data.unlink()


def quantize_int8(source: str | Path, target: str | Path) -> int:
    """onnxruntime dynamic quantisation (int8 weights of MatMul/Gemm/Conv, activations at run time); returns
    the new file's size in bytes."""
    _require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return Path(target).stat().st_size


def latency(
    unet: nn.Module, paths: dict[str, Path], *, batch_size: int, repeats: int = 30, threads: int | None = None
) -> dict[str, float]:
    """Median forward wall time (ms) of PyTorch and each ONNX file on the CPU, interleaved, after warm-up."""
    names = list(input_spec(unet))
    inputs = example_inputs(unet, batch_size, seed=7)
    feeds = {k: v.numpy() for k, v in inputs.items()}
    forward = _Forward(unet.float().eval(), names).eval()
    runners = {"pytorch": lambda: forward(*inputs.values())}
    for label, path in paths.items():
        session = _session(path, threads, spin=False)
        runners[label] = lambda session=session: session.run(None, feeds)
    times: dict[str, list[float]] = {label: [] for label in runners}
    with torch.no_grad():
        for i in range(repeats + 3):
            for label, run in runners.items():
                start = time.perf_counter()
                run()
                if i >= 3:
                    times[label].append((time.perf_counter() - start) * 1e3)
    return {label: statistics.median(values) for label, values in times.items()}


class OnnxDenoiser(PositionalDenoiser):
    """An onnxruntime session called like the diffusers network it was exported from (CPU, fp32 in and out).

    Holds the source network's ``config`` so samplers and ``DiffusionTeacher`` read sizes and conditioning
    from it; its one (empty) parameter only tells callers which device inputs live on.
    """

    def __init__(self, path: str | Path, config: Any, *, threads: int | None = None) -> None:
        super().__init__()
        self.session = _session(Path(path), threads)
        self.config = config
        self.names = [i.name for i in self.session.get_inputs()]
        # exports before flow matching took int64 timesteps; a float graph takes s * T of a flow schedule unrounded
        types = {i.name: i.type for i in self.session.get_inputs()}
        self.time_dtype = torch.int64 if types.get("timestep") == "tensor(int64)" else torch.float32
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    @classmethod
    def from_export(cls, directory: str | Path, *, int8: bool = False, threads: int | None = None):
        """From a ``distill export --format onnx`` folder (``onnx/model.onnx`` beside ``unet/config.json``)."""
        directory = Path(directory)
        config = json.loads((directory / "unet" / "config.json").read_text())
        return cls(
            directory / "onnx" / (INT8_NAME if int8 else ONNX_NAME),
            SimpleNamespace(**config),
            threads=threads,
        )

    runtime = "the ONNX network"

    def run(self, inputs: list[torch.Tensor], sample: torch.Tensor) -> torch.Tensor:
        feeds = {
            name: x.detach().cpu().contiguous().numpy() for name, x in zip(self.names, inputs, strict=True)
        }
        out = self.session.run(None, feeds)[0]
        return torch.from_numpy(out).to(sample.device, sample.dtype)


def onnx_model(directory: str | Path, *, int8: bool = False, threads: int | None = None):
    """A :class:`~teachers.DiffusionTeacher` whose network is the export's ONNX file (samplers accept it)."""
    from teachers import DiffusionTeacher

    directory = Path(directory)
    scheduler = json.loads((directory / "scheduler" / "scheduler_config.json").read_text())
    return DiffusionTeacher(OnnxDenoiser.from_export(directory, int8=int8, threads=threads), scheduler)


def is_digits_shaped(config: Any) -> bool:
    """Whether the shipped digits evaluator can score this network's samples (1x16x16, 10 classes + null)."""
    size = config.sample_size
    size = size[0] if isinstance(size, list | tuple) else size
    return config.in_channels == 1 and size == 16 and getattr(config, "num_class_embeds", None) == 11


def compare_int8(
    directory: str | Path, *, num_samples: int = 1000, steps: int | None = None, seed: int = 0
) -> dict | None:
    """FID/accuracy of the fp32 and int8 ONNX files of a digits export from the same noise and labels (the
    scheduler's sampler, ``steps`` defaulting to 4 for consistency students and 50 otherwise); None when the
    network is not digits-shaped."""
    from distill.metrics import DigitsEvaluator
    from distill.pipelines import evaluate_model, resolve_sampler

    directory = Path(directory)
    fp32 = onnx_model(directory)
    if not is_digits_shaped(fp32.unet.config):
        return None
    if steps is None:
        steps = 4 if resolve_sampler(fp32) == "consistency" else 50
    evaluator = DigitsEvaluator()
    labels = torch.arange(num_samples) % 10
    result: dict[str, Any] = {"num_samples": num_samples, "steps": steps}
    for label, model in (("fp32", fp32), ("int8", onnx_model(directory, int8=True))):
        result[label] = evaluate_model(model, evaluator, labels=labels, steps=steps, seed=seed)
    return result
