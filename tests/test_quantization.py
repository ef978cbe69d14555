"""Int8 quantization (PT2E through torchao and ExecuTorch's XNNPACK quantizer): the captured graph, post-training
quantization, the quantization-aware student inside the methods (train, checkpoint, resume), and its refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import SCHEDULER, cpu_trainer, random_digits_loader, save_teacher_folder, tiny_cond_unet

from distill import quantization as Q
from distill.onnx_export import example_inputs, input_spec
from teachers import DiffusionTeacher

pytest.importorskip("executorch")


def call(net, inputs):
    """The network's output for ``example_inputs``-style inputs (a diffusers UNet or a quantized wrapper)."""
    kwargs = {k: v for k, v in inputs.items() if k not in ("sample", "timestep")}
    if isinstance(net, Q.QuantizedDenoiser):
        return net(inputs["sample"], inputs["timestep"], **kwargs)
    return net(
        inputs["sample"], inputs["timestep"], kwargs.pop("encoder_hidden_states", None), **kwargs
    ).sample


@pytest.fixture
def student():
    return tiny_cond_unet(seed=1, time_cond_proj_dim=8).eval()


def test_the_captured_graph_computes_the_network_at_every_batch_size(student):
    graph, names = Q.capture(student)
    assert names == list(input_spec(student))
    assert graph.get_parameter("unet.conv_in.weight") is student.conv_in.weight  # shared, not copied
    with torch.no_grad():
        # 64 and above take diffusers' Upsample2D .contiguous() branch, which the capture (batch 2) skipped
        for batch in (1, 3, 64, 100):
            inputs = example_inputs(student, batch, seed=batch)
            # (the .contiguous() changes memory layout, so kernels may round differently: float tolerance)
            torch.testing.assert_close(graph(*inputs.values()), call(student, inputs), rtol=1e-5, atol=1e-5)


def test_post_training_int8_keeps_the_time_projection_float_and_stays_close(student, tmp_path):
    save_teacher_folder(tmp_path / "export", student)
    calibration = Q.calibration_inputs(tmp_path / "export", num_images=8, steps=(1, 2))
    assert len(calibration) == 3 and all(len(c) == len(input_spec(student)) for c in calibration)
    int8 = Q.quantize_ptq(student, calibration)
    assert int8.stage == "int8" and not int8.training
    inside_time_proj = [
        n for n in int8.graph.graph.nodes if "quantize" in str(n.target) and not Q._outside_float_modules(n)
    ]
    assert (
        inside_time_proj == []
    )  # the sinusoidal projection multiplies raw timesteps: int8 would scramble it
    quantized_ops = [n for n in int8.graph.graph.nodes if "quantize_per_tensor" in str(n.target)]
    assert len(quantized_ops) > 20
    with torch.no_grad():
        for inputs in calibration:
            named = dict(zip(int8.names, inputs, strict=True))
            ref, got = call(student, named), call(int8, named)
            assert not torch.equal(ref, got)  # it is quantized...
            rel = ((got - ref).square().mean() / ref.square().mean()).sqrt()
            assert rel < 0.15, float(
                rel
            )  # ...and close to the float network on the inputs it was calibrated on
    with pytest.raises(ValueError, match="calibration inputs"):
        Q.quantize_ptq(student, [])


def test_a_fake_quantized_student_trains_observes_only_in_training_and_round_trips(student):
    network = copy.deepcopy(student).requires_grad_(True)
    qat = Q.prepare_qat(network)
    inputs = example_inputs(student, 4, seed=3)
    qat.set_fake_quant(False)
    for mode in (True, False):  # fake-quantization off: exactly the float network, in both modes
        qat.train(mode)
        with torch.no_grad():
            assert torch.equal(call(qat, inputs), call(network, inputs))
    qat.set_fake_quant(True)
    qat.train()
    out = call(qat, inputs)
    out.square().mean().backward()
    assert all(
        p.grad is not None for p in network.parameters() if p.requires_grad
    )  # straight-through gradients
    observed = {k: v.clone() for k, v in qat.state_dict().items() if k.endswith("min_val")}
    assert observed and all(torch.isfinite(v).all() for v in observed.values())

    qat.eval()  # validation samples never move the scales
    with torch.no_grad():
        call(qat, example_inputs(student, 4, seed=9))
    after = {k: v for k, v in qat.state_dict().items() if k.endswith("min_val")}
    assert all(torch.equal(observed[k], after[k]) for k in observed)

    qat.freeze_observers()  # for good, and recorded in the state dict
    qat.train()
    with torch.no_grad():
        call(qat, example_inputs(student, 4, seed=10))
    assert all(torch.equal(observed[k], qat.state_dict()[k]) for k in observed)

    fresh = Q.prepare_qat(copy.deepcopy(student).requires_grad_(True))
    fresh.load_state_dict(qat.state_dict())
    fresh.eval()
    qat.eval()
    assert bool(fresh.observers_frozen)
    with torch.no_grad():
        assert torch.equal(call(fresh, inputs), call(qat, inputs))
        converted = Q.convert(qat)
        # the converted int8 graph carries the trained scales: it computes what the fake-quantized one does
        torch.testing.assert_close(call(converted, inputs), call(qat, inputs), rtol=1e-4, atol=1e-4)
    assert converted.stage == "int8" and qat.stage == "qat"


def test_a_calibrated_fake_quantized_student_is_post_training_int8_and_trains_what_converts(
    student, tmp_path
):
    save_teacher_folder(tmp_path / "export", student)
    calibration = Q.calibration_inputs(tmp_path / "export", num_images=8, steps=(1, 2))
    ptq = Q.quantize_ptq(student, calibration)
    qat = Q.prepare_qat(copy.deepcopy(student).requires_grad_(True).train())
    assert all(type(m).__name__ == "FakeQuantize" for m in Q._observers_by_input(qat.graph).values())
    qat.set_fake_quant(False)
    with torch.no_grad(), Q.histogram_calibration(qat):
        for inputs in calibration:
            qat.graph(*inputs)
    qat.set_fake_quant(True)
    qat.freeze_observers()
    inputs = example_inputs(student, 3, seed=4)
    with torch.no_grad():
        # calibrated with post-training quantization's observers: the fake-quantized graph is PTQ's int8 graph...
        torch.testing.assert_close(call(qat, inputs), call(ptq, inputs), rtol=0, atol=1e-6)
    # ...and stays the graph conversion produces after a training step (scales kept, not recomputed)
    qat.train()
    call(qat, inputs).square().mean().backward()
    with torch.no_grad():
        for p in qat.network.parameters():
            if p.grad is not None:
                p -= 1e-3 * p.grad.sign()
        qat.eval()
        torch.testing.assert_close(call(Q.convert(qat), inputs), call(qat, inputs), rtol=0, atol=1e-6)
        assert not torch.equal(call(qat, inputs), call(ptq, inputs))
    with pytest.raises(ValueError, match="calibration must be one of"):
        Q.Int8QAT(calibration="minmax")


def _kd(tmp_path, **options):
    from distill import KnowledgeDistillation

    save_teacher_folder(tmp_path / "teacher", tiny_cond_unet(seed=0))
    teacher = DiffusionTeacher.from_pretrained(tmp_path / "teacher")
    return KnowledgeDistillation(
        teacher=teacher,
        student=tiny_cond_unet(seed=1),
        feature_weight=0.0,
        evaluator=None,
        samples_per_class=0,
        seed=0,
        **options,
    )


def test_quantization_aware_kd_calibrates_trains_and_resumes_from_its_checkpoint(tmp_path):
    method = _kd(tmp_path, quantize=Q.Int8QAT(calibration_batches=2, freeze_observers_after=2))
    assert method.quantized
    before = {k: v.clone() for k, v in method.student.named_parameters()}
    trainer = cpu_trainer(3, enable_checkpointing=True, default_root_dir=tmp_path)
    trainer.fit(method, train_dataloaders=random_digits_loader())
    assert any(not torch.equal(before[k], v) for k, v in method.student.named_parameters())
    assert bool(method.student.observers_frozen)  # after step 2
    ckpt = tmp_path / "q.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any(k.startswith("student.graph.activation_post_process") for k in state)
    assert all(torch.isfinite(v).all() for v in state.values() if torch.is_floating_point(v))

    from distill.export import load_checkpoint

    resumed = _kd(tmp_path, quantize=Q.Int8QAT(calibration_batches=2, freeze_observers_after=2))
    load_checkpoint(resumed, ckpt)
    inputs = example_inputs(resumed.student.network, 3, seed=5)
    resumed.eval()
    method.eval()
    with torch.no_grad():
        assert torch.equal(call(resumed.eval_student(), inputs), call(method.eval_student(), inputs))

    resumed.save_pretrained(tmp_path / "export")  # the float weights, loadable as a plain UNet...
    loaded = DiffusionTeacher.from_pretrained(tmp_path / "export").unet
    assert type(loaded).__name__ == "UNet2DConditionModel"
    assert torch.equal(loaded.conv_in.weight, resumed.eval_student().network.conv_in.weight)
    # ...and the int8 state beside them rebuilds the trained int8 graph from the folder alone
    int8 = Q.load_int8(tmp_path / "export")
    with torch.no_grad():
        expected = call(Q.convert(resumed.eval_student()), inputs)
        torch.testing.assert_close(call(int8, inputs), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="quantize it post-training"):
        Q.load_int8(tmp_path / "teacher")


def test_quantize_refuses_what_a_captured_graph_cannot_do(tmp_path):
    with pytest.raises(ValueError, match="feature_weight: 0"):
        _kd(tmp_path, quantize=Q.Int8QAT()).__class__(
            teacher=DiffusionTeacher.from_pretrained(tmp_path / "teacher"),
            student=tiny_cond_unet(seed=1),
            evaluator=None,
            quantize=Q.Int8QAT(),
        )
    with pytest.raises(ValueError, match=r"compile_student"):
        _kd(tmp_path, quantize=Q.Int8QAT(), compile_student=True)
    with pytest.raises(ValueError, match="calibration_batches"):
        Q.Int8QAT(calibration_batches=-1)
    with pytest.raises(ValueError, match="freeze_observers_after"):
        Q.Int8QAT(freeze_observers_after=-5)


def test_consistency_keeps_a_float_target_beside_a_fake_quantized_student(tmp_path):
    from distill import ConsistencyDistillation

    save_teacher_folder(tmp_path / "teacher", tiny_cond_unet(seed=0), SCHEDULER)
    teacher = DiffusionTeacher.from_pretrained(tmp_path / "teacher")
    method = ConsistencyDistillation(
        teacher=teacher,
        student=tiny_cond_unet(seed=1),
        original_steps=10,
        evaluator=None,
        samples_per_class=0,
        quantize=Q.Int8QAT(calibration_batches=1),
    )
    assert isinstance(method.student, Q.QuantizedDenoiser)
    assert type(method.target.module).__name__ == "UNet2DConditionModel"
    start = [p.clone() for p in method.target.module.parameters()]
    cpu_trainer(2).fit(method, train_dataloaders=random_digits_loader())
    # the float target follows the student's float weights (EMA): it moved, and towards the student
    moved = [not torch.equal(a, b) for a, b in zip(start, method.target.module.parameters(), strict=True)]
    assert any(moved)
    for before, target, param in zip(
        start, method.target.module.parameters(), method.student.parameters(), strict=True
    ):
        assert (param - target).abs().sum() <= (param - before).abs().sum() + 1e-6
