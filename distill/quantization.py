"""Static int8 quantization of students (weights per channel, activations per tensor) through PT2E.

The student's forward is captured with ``torch.export`` (dynamic batch), annotated by ExecuTorch's
``XNNPACKQuantizer`` (the int8 scheme that phones' XNNPACK kernels run: symmetric per-channel int8 weights,
asymmetric per-tensor int8 activations) and prepared with ``torchao.quantization.pt2e``:

- post-training quantization (:func:`quantize_ptq`): observers calibrated on inputs the student really sees, then
  converted to a quantize/dequantize graph;
- quantization-aware distillation (:class:`Int8QAT`, the ``quantize`` option of every method): the student trains
  through fake-quantization (straight-through rounding, observers tracking activation ranges) while the method's
  fp teacher supervises it; :func:`convert` turns the trained graph into the same quantize/dequantize graph, its
  scales passed through.

:class:`QuantizedDenoiser` wraps either graph so the samplers, EMA, checkpoints and exports call it like the
diffusers network it came from; the graph shares its float weights with that network (``network``), which is what
``save_pretrained`` writes. :mod:`distill.deploy` lowers the converted graph to ONNX (QDQ) and ExecuTorch.

Needs the ``deploy`` extra: ``pip install "distill-diffusion[deploy]"`` (executorch, torchao).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.onnx_export import PositionalDenoiser, _Forward, example_inputs, input_spec, positional_inputs

DEPLOY_HINT = 'pip install "distill-diffusion[deploy]"'
#: the captured graph's batch range; diffusers' Upsample2D branches on ``batch >= 64`` for a memory-format fix
#: (values unchanged), so the capture runs below it and the range check is lifted (see :func:`capture`)
CAPTURE_MAX_BATCH = 63


def require_deploy():
    """Import torchao's PT2E quantization and ExecuTorch's XNNPACK quantizer, or say how to install them."""
    previous = logging.getLogger("torch.utils._pytree").level
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao registers enums at import time
    try:
        import torchao.quantization.pt2e as pt2e
        from executorch.backends.xnnpack.quantizer import xnnpack_quantizer
    except ImportError as error:
        raise ImportError(
            f"int8 quantization and ExecuTorch export need executorch and torchao: {DEPLOY_HINT}"
        ) from error
    finally:
        logging.getLogger("torch.utils._pytree").setLevel(previous)
    return pt2e, xnnpack_quantizer


def check_quantizable(student: nn.Module, *, argument: str = "student") -> None:
    """Refuse networks the int8 path does not capture: transformers (SD3/FLUX) and anything without a diffusers
    UNet config."""
    from teachers.transformer import transformer_family

    if transformer_family(student) is not None:
        raise ValueError(
            f"{argument}: int8 quantization captures UNet students; an SD3/FLUX transformer student "
            f"({type(student).__name__}) is not supported (leave `quantize` unset)"
        )
    if getattr(student, "config", None) is None or not hasattr(student.config, "in_channels"):
        raise ValueError(
            f"{argument}: int8 quantization needs a diffusers-style UNet with a config (got {type(student).__name__})"
        )


def capture(network: nn.Module) -> tuple[torch.fx.GraphModule, list[str]]:
    """``network``'s forward as an exported graph over positional inputs (``input_spec`` order), any batch size.

    The graph's parameters are ``network``'s own (shared, not copied). The capture runs at a batch below 64, where
    diffusers' Upsample2D skips a ``.contiguous()`` it applies to batches of 64 or more (a memory-format fix for a
    CUDA kernel, identical values), so the graph computes the network at every batch size and its range check is
    removed (checked in tests at 1, 3, 64 and 200).
    """
    names = list(input_spec(network))
    batch = torch.export.Dim("batch", min=1, max=CAPTURE_MAX_BATCH)
    inputs = tuple(example_inputs(network, 2).values())
    was_training = network.training
    network.eval()
    try:
        program = torch.export.export(
            _Forward(network, names), inputs, dynamic_shapes=(tuple({0: batch} for _ in names),)
        )
    finally:
        network.train(was_training)
    graph = program.module(check_guards=False)
    for key, hook in list(graph._forward_pre_hooks.items()):
        if getattr(hook, "__name__", "") == "_check_input_constraints_pre_hook":
            del graph._forward_pre_hooks[key]
    return graph, names


#: submodules kept in float: the sinusoidal time projection multiplies timesteps (0..1000) by frequencies, and an
#: int8 activation there rounds the timestep to multiples of ~4 and scrambles every embedding (measured: relative
#: error 0.4-0.8 of the network's output with it quantized); it holds no weights and costs no MACs
FLOAT_MODULES = ("unet.time_proj",)


def xnnpack_quantizer(*, qat: bool, per_channel: bool = True):
    """ExecuTorch's XNNPACK quantizer with its symmetric int8 config (per-channel weights by default), the
    :data:`FLOAT_MODULES` left in float; for QAT with :func:`unfused_fake_quantizers`."""
    _, xq = require_deploy()
    config = xq.get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=qat)
    if qat:
        config = unfused_fake_quantizers(config)
    return xq.XNNPACKQuantizer().set_global(config).set_filter_function(_outside_float_modules)


def unfused_fake_quantizers(config):
    """``config`` with torchao's ``FakeQuantize`` (same observers, same ``eps``) in place of the fused
    ``FusedMovingAvgObsFakeQuantize``.

    The fused kernel recomputes scale and zero point from its running range at every forward, observers on or off,
    with its own rounding of symmetric per-channel parameters (measured on the digits student: weight channels with
    a small range got zero points of +-127 and scales below ``eps``), so the graph trained is not the one
    :func:`convert` and XNNPACK run (3% relative output difference after calibration). ``FakeQuantize`` computes its
    parameters through the observer's own ``calculate_qparams``, as conversion does, and keeps them while its
    observer is off: the fake-quantized graph then computes exactly what the converted int8 graph computes."""
    import dataclasses

    pt2e, _ = require_deploy()

    def unfuse(spec):
        ctr = getattr(spec, "observer_or_fake_quant_ctr", None)
        partial = getattr(ctr, "p", None)
        if partial is None or partial.func is not pt2e.FusedMovingAvgObsFakeQuantize:
            return spec
        keywords = {"observer": pt2e.MovingAverageMinMaxObserver, **partial.keywords}
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=pt2e.FakeQuantize.with_args(**keywords))

    return dataclasses.replace(
        config,
        input_activation=unfuse(config.input_activation),
        output_activation=unfuse(config.output_activation),
        weight=unfuse(config.weight),
    )


def _outside_float_modules(node: torch.fx.Node) -> bool:
    """Whether ``node`` lies outside every :data:`FLOAT_MODULES` submodule (by the capture's module stack)."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = [str(entry[0]) for entry in stack.values()]
    return not any(path == name or path.startswith(name + ".") for path in paths for name in FLOAT_MODULES)


class QuantizedDenoiser(PositionalDenoiser):
    """A captured int8 graph (fake-quantized for training, or converted) called like its diffusers network.

    ``network`` is the float network whose parameters the graph shares (what exports write); it is held
    unregistered so state dicts list each tensor once, under ``graph``. ``stage`` is ``"qat"`` (fake-quantized,
    trainable) or ``"int8"`` (converted quantize/dequantize graph). In eval mode the observers stop updating
    (validation samples never move the scales), and :meth:`freeze_observers` stops them for good (saved in the
    state dict). The graph computes as captured, in eval mode: no dropout, batch-norm statistics frozen (diffusion
    students train without dropout; this holds for fine-tuning a trained student's batch norms too).
    """

    def __init__(
        self, graph: torch.fx.GraphModule, names: list[str], network: nn.Module, *, stage: str
    ) -> None:
        super().__init__()
        self.graph = graph
        self.names = list(names)
        object.__setattr__(self, "network", network)
        self.stage = stage
        self.register_buffer("observers_frozen", torch.zeros((), dtype=torch.bool))
        self.training = network.training
        self._applied: bool | None = None  # whether the observers were last switched on
        self.register_load_state_dict_post_hook(_reset_mode)

    # what samplers, checks and exports read off a diffusers network
    @property
    def config(self):
        return self.network.config

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return next(self.graph.parameters()).device

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or name in ("network", "graph"):
                raise
            # the float network's descriptive attributes (trained_prediction_type, registry info, ...)
            return getattr(self.__dict__["network"], name)

    def train(self, mode: bool = True) -> QuantizedDenoiser:
        self.training = mode
        self.network.training = mode
        self._sync_mode()
        return self

    def _sync_mode(self) -> None:
        """Switch the observers for ``self.training`` (Lightning restores modes after validation by setting
        ``training`` directly, so this also runs at every forward). The graph itself keeps its capture's eval
        semantics in both modes: dropout off and batch-norm statistics frozen (torchao's train/eval rewrite loses
        dropout's probability: measured, it turned p=0 into 0.5)."""
        observe = self.training and self.stage == "qat" and not bool(self.observers_frozen)
        if getattr(self, "_applied", None) == observe:
            return
        pt2e, _ = require_deploy()
        if self.stage == "qat":
            self.graph.apply(pt2e.enable_observer if observe else pt2e.disable_observer)
        self._applied = observe

    def freeze_observers(self) -> None:
        """Stop the activation-range observers for good (the scales stay as they are)."""
        self.observers_frozen.fill_(True)
        self._sync_mode()

    def set_fake_quant(self, enabled: bool) -> None:
        """Fake-quantization on or off (off: observers only, as in calibration)."""
        pt2e, _ = require_deploy()
        self.graph.apply(pt2e.enable_fake_quant if enabled else pt2e.disable_fake_quant)

    @property
    def runtime(self) -> str:
        return f"the quantized {type(self.network).__name__}"

    def run(self, inputs: list[torch.Tensor], sample: torch.Tensor) -> torch.Tensor:
        self._sync_mode()
        return self.graph(*inputs)


def _reset_mode(module: QuantizedDenoiser, incompatible_keys) -> None:
    """After a state-dict load (observer switches included), re-apply the mode at the next forward."""
    module._applied = None


def prepare_qat(network: nn.Module, *, per_channel: bool = True) -> QuantizedDenoiser:
    """``network`` with fake-quantized int8 weights and activations, trainable (shares its parameters)."""
    require_deploy()
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    check_quantizable(network)
    graph, names = capture(network)
    prepared = prepare_qat_pt2e(graph, xnnpack_quantizer(qat=True, per_channel=per_channel))
    _observe_weights(prepared)
    wrapper = QuantizedDenoiser(prepared, names, network, stage="qat")
    wrapper.per_channel = per_channel
    return wrapper.train(network.training)


def _observe_weights(graph: torch.fx.GraphModule) -> None:
    """Give every weight fake-quantizer its weights' range and scales now, so the graph runs in eval mode before
    any training step (validation sanity checks; a per-channel quantizer has no per-channel scales until it
    observes)."""
    pt2e, _ = require_deploy()
    with torch.no_grad():
        for node in graph.graph.nodes:
            if node.op != "call_module" or not str(node.target).startswith("activation_post_process"):
                continue
            source = node.args[0]
            if not isinstance(source, torch.fx.Node) or source.op != "get_attr":
                continue
            quantizer = graph.get_submodule(str(node.target))
            if not isinstance(quantizer, pt2e.FakeQuantizeBase):
                continue
            quantizer.activation_post_process(_attribute(graph, str(source.target)).detach())
            scale, zero = quantizer.calculate_qparams()
            quantizer.scale.data = scale.to(quantizer.scale.dtype)
            quantizer.zero_point.data = zero.to(quantizer.zero_point.dtype)


def _attribute(graph: torch.fx.GraphModule, target: str) -> torch.Tensor:
    owner, _, name = target.rpartition(".")
    return getattr(graph.get_submodule(owner) if owner else graph, name)


def calibration_inputs(
    directory, *, num_images: int = 64, steps: Iterable[int] = (1, 2, 4), seed: int = 0
) -> list[tuple[torch.Tensor, ...]]:
    """The inputs an export's network sees while sampling: its scheduler's sampler at each step count, balanced
    labels, noise keyed on ``(seed, index)`` (:func:`distill.pipelines.sample_images`). Calibration data that
    matches deployment (time-step aware, as Q-Diffusion calibrates on the sampler's trajectory)."""
    import json
    from pathlib import Path

    from distill.pipelines import sample_images
    from teachers import DiffusionTeacher

    directory = Path(directory)
    source = DiffusionTeacher.from_pretrained(directory)
    network = source.unet.float().eval()
    names = list(input_spec(network))
    recorded: list[tuple[torch.Tensor, ...]] = []

    class Recorder(nn.Module):
        """The network, recording each call's inputs in ``input_spec`` order."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = network
            self.config = network.config

        def forward(
            self, sample, timestep, encoder_hidden_states=None, class_labels=None, timestep_cond=None
        ):
            inputs = positional_inputs(
                names,
                sample,
                timestep,
                encoder_hidden_states=encoder_hidden_states,
                class_labels=class_labels,
                timestep_cond=timestep_cond,
            )
            recorded.append(tuple(x.detach().clone() for x in inputs))
            return self.inner(
                sample,
                timestep,
                encoder_hidden_states=encoder_hidden_states,
                class_labels=class_labels,
                timestep_cond=timestep_cond,
            )

    scheduler = json.loads((directory / "scheduler" / "scheduler_config.json").read_text())
    model = DiffusionTeacher(Recorder(), scheduler)
    classes = model.num_classes
    labels = torch.arange(num_images) % classes if classes else None
    with torch.no_grad():
        for count in steps:
            sample_images(
                model,
                labels=labels,
                seeds=torch.full((num_images,), seed, dtype=torch.long),
                indices=torch.arange(num_images),
                steps=count,
                clip_x0="auto",
            )
    return recorded


def quantize_ptq(
    network: nn.Module, calibration: Iterable[tuple[torch.Tensor, ...]], *, per_channel: bool = True
) -> QuantizedDenoiser:
    """Post-training static int8: observers calibrated on ``calibration`` (positional input tuples in
    ``input_spec`` order), then converted. ``network`` is not changed (a copy is captured)."""
    require_deploy()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    check_quantizable(network)
    network = copy.deepcopy(network).eval()
    graph, names = capture(network)
    prepared = prepare_pt2e(graph, xnnpack_quantizer(qat=False, per_channel=per_channel))
    count = 0
    with torch.no_grad():
        for inputs in calibration:
            prepared(*inputs)
            count += 1
    if count == 0:
        raise ValueError("post-training quantization needs calibration inputs; none were given")
    converted = convert_pt2e(prepared)
    return QuantizedDenoiser(converted, names, network, stage="int8").eval()


def convert(qat: QuantizedDenoiser) -> QuantizedDenoiser:
    """The int8 quantize/dequantize graph of a trained fake-quantized student, its scales passed through (a copy;
    ``qat`` keeps training).

    The scales are the ones training used: each fake-quantizer's own ``scale``/``zero_point``. torchao's
    ``convert_pt2e`` would recompute them from the observers' ranges, and the fused moving-average fake-quantizer
    derives its per-channel weight scales slightly differently (measured: a relative difference of 2-4% between the
    converted and the trained outputs, as large as the quantization error itself; none with the scales passed
    through)."""
    pt2e, _ = require_deploy()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    if qat.stage != "qat":
        raise ValueError(f"convert() takes a fake-quantized (qat) student, got stage {qat.stage!r}")
    source = copy.deepcopy(qat).eval()
    for module in source.graph.modules():
        if isinstance(module, pt2e.FakeQuantizeBase):
            module.calculate_qparams = functools.partial(_stored_qparams, module)
    converted = convert_pt2e(source.graph)
    return QuantizedDenoiser(converted, source.names, source.network, stage="int8").eval()


def _stored_qparams(module) -> tuple[torch.Tensor, torch.Tensor]:
    """A fake-quantizer's own scale and zero point, in the dtypes and shapes its observer returns. Symmetric schemes
    get zero points of 0: the fused fake-quantizer gives all-zero weight channels a zero point of +-127 (measured),
    which XNNPACK's symmetric int8 kernels ignore (the program then differed from the PyTorch graph by 28% relative
    RMS instead of 4%); for such a channel 0 represents its weights as well."""
    observed_scale, observed_zero = module.activation_post_process.calculate_qparams()
    scale = module.scale.detach().clone().to(observed_scale.dtype).reshape(observed_scale.shape)
    zero = module.zero_point.detach().clone().to(observed_zero.dtype).reshape(observed_zero.shape)
    if module.qscheme in (torch.per_tensor_symmetric, torch.per_channel_symmetric):
        zero = torch.zeros_like(zero)
    return scale, zero


def _observers_by_input(graph: torch.fx.GraphModule) -> dict[str, nn.Module]:
    """Each observer or fake-quantizer of a prepared graph, keyed by the node it observes (the capture's node names
    are the same in every graph prepared from the same network)."""
    out: dict[str, nn.Module] = {}
    for node in graph.graph.nodes:
        if node.op == "call_module" and str(node.target).startswith("activation_post_process"):
            out[str(node.args[0])] = graph.get_submodule(str(node.target))
    return out


@contextmanager
def histogram_calibration(student: QuantizedDenoiser) -> Iterator[None]:
    """Calibrate a fake-quantized student's activation ranges as post-training quantization does.

    Inside the block the student computes in float through the observers of XNNPACK's post-training config
    (``HistogramObserver`` on every activation: the range that minimises the quantization error of the observed
    distribution, clipping rare outliers) on a capture sharing its parameters. On exit every activation
    fake-quantizer takes the range they chose (scale, zero point, and the matching min/max from which its
    moving-average observer continues), and every weight quantizer its per-channel range, so the calibrated student
    computes what post-training int8 does. QAT's own observers (a moving average
    of per-batch min/max, starting from the first batch) start from the outermost range of the first batches
    instead: on the digits consistency student's 1/2/4-step trajectories that left the calibrated int8 student 4x
    further (mean squared output error) from its fp32 network than post-training quantization."""
    pt2e, _ = require_deploy()
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    if student.stage != "qat":
        raise ValueError(f"histogram_calibration takes a fake-quantized (qat) student, got {student.stage!r}")
    graph, _ = capture(student.network)
    observed = prepare_pt2e(graph, xnnpack_quantizer(qat=False, per_channel=student.per_channel))
    trained = student.graph
    student._modules["graph"] = observed
    try:
        yield
    finally:
        student._modules["graph"] = trained
        student._applied = None
    fake = _observers_by_input(trained)
    for name, observer in _observers_by_input(observed).items():
        if not bool(torch.isfinite(observer.min_val).all()) or observer.min_val.numel() == 0:
            continue  # activations the calibration never reached keep their own quantizer
        target = fake.get(name)
        if target is None or not isinstance(target, pt2e.FakeQuantizeBase):
            raise RuntimeError(
                f"the fake-quantized graph has no quantizer for {name!r}; re-capture the student"
            )
        scale, zero = observer.calculate_qparams()
        if type(observer).__name__ == "HistogramObserver":  # the range it chose, not the one it saw
            low, high = scale * (observer.quant_min - zero), scale * (observer.quant_max - zero)
        else:  # weights: min/max per channel, as QAT's own weight observer takes them at its first step
            low, high = observer.min_val, observer.max_val
        running = target.activation_post_process
        target.scale.data = scale.detach().clone().to(target.scale.dtype)
        target.zero_point.data = zero.detach().clone().to(target.zero_point.dtype)
        running.min_val.data = low.detach().clone().reshape(-1 if running.min_val.dim() else ())
        running.max_val.data = high.detach().clone().reshape(-1 if running.max_val.dim() else ())


INT8_STATE = Path("quantization") / "int8_state.safetensors"
INT8_CONFIG = Path("quantization") / "config.json"


def save_int8_state(student: QuantizedDenoiser, directory: str | Path) -> Path:
    """Write a quantization-aware student's int8 state beside its exported float weights: every fake-quantizer's
    scale, zero point and observed range (``quantization/int8_state.safetensors``) and the scheme
    (``quantization/config.json``), so :func:`load_int8` rebuilds the same int8 graph from the folder alone."""
    from safetensors.torch import save_file

    if student.stage != "qat":
        raise ValueError(f"save_int8_state takes a fake-quantized (qat) student, got stage {student.stage!r}")
    directory = Path(directory)
    params = {name for name, _ in student.graph.named_parameters()}
    state = {
        k: v.detach().clone().contiguous()
        for k, v in student.graph.state_dict().items()
        if k not in params and isinstance(v, torch.Tensor)
    }
    (directory / INT8_STATE).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(directory / INT8_STATE))
    from importlib.metadata import version

    config = {
        "scheme": "XNNPACKQuantizer symmetric int8 (per-tensor activations)",
        "per_channel": student.per_channel,
        "float_modules": list(FLOAT_MODULES),
        "observers_frozen": bool(student.observers_frozen),
        "torchao": version("torchao"),
        "executorch": version("executorch"),
    }
    (directory / INT8_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return directory / INT8_STATE


def load_int8(directory: str | Path) -> QuantizedDenoiser:
    """The converted int8 graph of an exported quantization-aware student (its ``unet/`` and ``quantization/``)."""
    from safetensors.torch import load_file

    from teachers import DiffusionTeacher

    directory = Path(directory)
    if not (directory / INT8_STATE).is_file():
        raise FileNotFoundError(
            f"{directory} has no {INT8_STATE}: it was not exported from a quantization-aware run (quantize: Int8QAT); "
            "quantize it post-training instead (distill export ... --quantize int8 on its run)"
        )
    config = json.loads((directory / INT8_CONFIG).read_text())
    network = DiffusionTeacher.from_pretrained(directory).unet.float().eval()
    qat = prepare_qat(network, per_channel=config["per_channel"])
    result = qat.graph.load_state_dict(load_file(str(directory / INT8_STATE)), strict=False)
    params = {name for name, _ in qat.graph.named_parameters()}
    missing = [k for k in result.missing_keys if k not in params]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{directory / INT8_STATE} does not match the graph its unet/ captures (missing {missing[:4]}, "
            f"unexpected {result.unexpected_keys[:4]}); it was written by another version of the network or of "
            f"torchao ({config.get('torchao')})"
        )
    qat._applied = None
    return convert(qat.eval())


def float_network(student: nn.Module) -> nn.Module:
    """The float network behind a quantized student (itself for any other network)."""
    return student.network if isinstance(student, QuantizedDenoiser) else student


CALIBRATIONS = ("histogram", "moving_average")


class Int8QAT:
    """Quantization-aware distillation: the student trains through int8 fake-quantization (XNNPACK's scheme:
    symmetric per-channel int8 weights, per-tensor int8 activations), supervised by the method's fp teacher.

    Args:
        per_channel: per-output-channel weight scales (XNNPACK's default); false: one scale per tensor.
        calibration_batches: training batches run through the student with fake-quantization off before the
            first step, so the activation ranges start from data rather than from the first noisy update
            (0: none). Skipped on resume (the checkpoint holds the ranges).
        freeze_observers_after: stop updating activation ranges after this many optimizer steps (None: never),
            so the last steps train against the scales that ship.
        calibration: how the calibration batches set the activation ranges: "histogram" (post-training
            quantization's observer, :func:`histogram_calibration`: the int8 student starts where post-training
            int8 is) or "moving_average" (QAT's own observers: a moving average of per-batch min/max).
    """

    def __init__(
        self,
        per_channel: bool = True,
        calibration_batches: int = 8,
        freeze_observers_after: int | None = None,
        calibration: str = "histogram",
    ) -> None:
        if calibration_batches < 0:
            raise ValueError(f"calibration_batches must be >= 0, got {calibration_batches}")
        if freeze_observers_after is not None and freeze_observers_after < 0:
            raise ValueError(
                f"freeze_observers_after must be >= 0 steps or null (never), got {freeze_observers_after}"
            )
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
        require_deploy()  # a clear install hint before the model is built
        self.per_channel = per_channel
        self.calibration_batches = calibration_batches
        self.freeze_observers_after = freeze_observers_after
        self.calibration = calibration

    def prepare(self, student: nn.Module) -> QuantizedDenoiser:
        return prepare_qat(student, per_channel=self.per_channel)

    def __repr__(self) -> str:
        return (
            f"Int8QAT(per_channel={self.per_channel}, calibration_batches={self.calibration_batches}, "
            f"freeze_observers_after={self.freeze_observers_after}, calibration={self.calibration!r})"
        )


def describe(student: Any) -> str:
    """One line on a student's quantization state (for logs and model cards)."""
    if not isinstance(student, QuantizedDenoiser):
        return "fp32"
    return "int8 fake-quantized (QAT)" if student.stage == "qat" else "int8 (converted)"
