"""On-device exports: ExecuTorch programs (fp32, int8 and 4-bit linear weights, XNNPACK) run through ExecuTorch's
runtime, ONNX with static int8 QDQ in onnxruntime, `distill sample --runtime`, `distill convert`, and what
`distill export` refuses."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import save_teacher_folder, tiny_cond_unet

from distill import quantization as Q
from distill.pipelines import sample_images
from teachers import DiffusionTeacher

pytest.importorskip("executorch")
# lowering to ExecuTorch takes about a minute per program on 2 cores: the slow suite
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny class-conditional export folder with its ExecuTorch programs (fp32, post-training int8, 4-bit
    linear weights)."""
    from distill.deploy import executorch_section
    from distill.int4_weights import quantize_int4w

    root = tmp_path_factory.mktemp("deploy") / "export"
    save_teacher_folder(root, tiny_cond_unet(seed=3))
    network = DiffusionTeacher.from_pretrained(root).unet.float().eval()
    int8 = Q.quantize_ptq(network, Q.calibration_inputs(root, num_images=8, steps=(1, 2)))
    int8.origin = "post-training quantization"
    int4w = quantize_int4w(network, group_size=32)
    card = executorch_section(root, quantized=int8, max_batch=4, eval_samples=0, int4w=int4w)
    return root, int8, card


def test_executorch_programs_match_pytorch_and_report_what_runs_in_int8(exported):
    root, _, card = exported
    report = json.loads((root / "executorch" / "report.json").read_text())
    assert {p.name for p in (root / "executorch").iterdir()} == {
        "model.pte",
        "model_int8.pte",
        "model_int4w.pte",
        "report.json",
    }
    assert report["fp32"]["parity"]["max_abs_error"] <= 1e-3
    # XNNPACK's int8 kernels against PyTorch's int8 reference graph (the same scales): requantization rounds
    # differently layer by layer (measured 4% relative RMS on the digits student, 7% on this random tiny one)
    assert report["int8"]["parity"]["relative_rmse"] < 0.1
    for label in ("fp32", "int8"):
        macs = report[label]["macs"]
        assert macs["total"] > 0 and macs["delegated"] >= 0.9 * macs["total"]  # convs and matmuls in XNNPACK
    assert report["fp32"]["macs"]["int8"] == 0
    assert report["int8"]["macs"]["int8_share"] >= 0.9
    assert report["int8"]["size_bytes"] < report["fp32"]["size_bytes"]
    assert set(report["latency_batch1"]) == {
        "pytorch fp32",
        "executorch fp32",
        "executorch int8",
        "executorch int4w",
    }
    assert all(v["median_ms"] > 0 for v in report["latency_batch1"].values())
    assert "## ExecuTorch (XNNPACK)" in card and "model_int8.pte" in card


def test_int4w_puts_the_linear_layers_in_4_bit_and_reports_their_share(exported):
    """The 4-bit program quantizes exactly the linears whose width fits the group (attention projections here; the
    16-wide time-embedding input does not), its MAC share is those layers' MACs, and it runs like its PyTorch
    model."""
    from diffusers import UNet2DConditionModel

    root, _, card = exported
    report = json.loads((root / "executorch" / "report.json").read_text())["int4w"]
    network = UNet2DConditionModel.from_pretrained(root / "unet")
    linears = {name: m for name, m in network.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(report["quantized_layers"]) | set(report["float_layers"]) == set(linears)
    assert "time_embedding.linear_1" in report["float_layers"]
    assert all(linears[name].in_features % 32 == 0 for name in report["quantized_layers"])
    assert any(".attentions." in name for name in report["quantized_layers"])
    # the share: the quantized linears' MACs (batch 1) over the forward's, from hooks on the float network
    from distill.onnx_export import _Forward, example_inputs, input_spec

    macs: dict[str, float] = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, args, out, name=name: macs.__setitem__(name, out.numel() * mod.in_features)
        )
        for name, m in linears.items()
    ]
    with torch.no_grad():
        _Forward(network, list(input_spec(network)))(*example_inputs(network, 1).values())
    for hook in hooks:
        hook.remove()
    expected = sum(macs[name] for name in report["quantized_layers"])
    assert report["macs"]["int8"] == pytest.approx(expected, rel=1e-6)
    assert 0 < report["macs"]["int8_share"] < 0.5  # convolutions stay fp32
    assert report["macs"]["delegated"] >= 0.9 * report["macs"]["total"]
    # XNNPACK's dynamically quantized linear against torchao's reference: both quantize activations per token
    assert report["parity"]["relative_rmse"] < 0.05
    assert "model_int4w.pte" in card and "4-bit weights" in card


def test_the_executorch_program_samples_the_pytorch_exports_images(exported):
    from distill.deploy import executorch_model

    root, _, _ = exported
    labels = torch.tensor([0, 1, 2, 3, 4, 5])  # 6 > max_batch 4: the program runs in chunks
    kwargs = dict(labels=labels, seeds=torch.zeros(6, dtype=torch.long), indices=torch.arange(6), steps=3)
    with torch.no_grad():
        ref = sample_images(DiffusionTeacher.from_pretrained(root), **kwargs)
        got = sample_images(executorch_model(root), **kwargs)
        int8 = sample_images(executorch_model(root, int8=True), **kwargs)
        int4w = sample_images(executorch_model(root, int4w=True), **kwargs)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    for quantized in (int8, int4w):
        assert (
            quantized.shape == ref.shape
            and torch.isfinite(quantized).all()
            and not torch.equal(quantized, ref)
        )
    with pytest.raises(ValueError, match="pick one"):
        executorch_model(root, int8=True, int4w=True)


def test_onnx_qdq_carries_the_int8_graph_into_onnxruntime(exported, tmp_path):
    from distill.deploy import export_onnx_qdq, onnx_parity

    _, int8, _ = exported
    written = export_onnx_qdq(int8, tmp_path / "model_int8_qdq.onnx")
    assert written["macs"]["int8_share"] >= 0.9
    parity = onnx_parity(int8, tmp_path / "model_int8_qdq.onnx")
    assert parity["relative_rmse"] < 0.2  # onnxruntime's int8 kernels round differently (docs/deployment.md)
    import onnx

    ops = {node.op_type for node in onnx.load(str(tmp_path / "model_int8_qdq.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops


def test_distill_sample_runs_the_executorch_program(exported, tmp_path):
    from distill.sample import main

    root, _, _ = exported
    out = tmp_path / "grid.png"
    main(
        [
            "--model",
            str(root),
            "--runtime",
            "executorch",
            "--int8",
            "--labels",
            "1",
            "2",
            "--steps",
            "2",
            "--out",
            str(out),
        ]
    )
    assert out.stat().st_size > 0
    with pytest.raises(SystemExit, match="--format onnx"):
        main(["--model", str(root), "--runtime", "onnx", "--out", str(tmp_path / "x.png")])


def test_export_refuses_what_a_format_cannot_take_before_writing(tmp_path):
    from distill.export import export_module

    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"--format onnx .*or --format executorch"):
        export_module(None, ckpt_path=tmp_path / "x.ckpt", output=out, quantize="int8")
    with pytest.raises(ValueError, match="quantize must be one of"):
        export_module(None, ckpt_path=tmp_path / "x.ckpt", output=out, format="executorch", quantize="int4")
    with pytest.raises(ValueError, match=r"int4w .*ExecuTorch only: pass --format executorch"):
        export_module(None, ckpt_path=tmp_path / "x.ckpt", output=out, format="onnx", quantize="int4w")
    assert not out.exists()


def test_a_quantization_aware_run_exports_its_trained_int8_graph(tmp_path):
    """`distill export --format onnx --quantize int8` of a QAT run: the float folder, its int8 state, and the QDQ file
    computing the run's own int8 graph (its trained scales, not a new calibration)."""
    from conftest import cpu_trainer, random_digits_loader

    from distill import KnowledgeDistillation
    from distill.export import export_module

    save_teacher_folder(tmp_path / "teacher", tiny_cond_unet(seed=0))

    def method():
        return KnowledgeDistillation(
            teacher=DiffusionTeacher.from_pretrained(tmp_path / "teacher"),
            student=tiny_cond_unet(seed=1),
            feature_weight=0.0,
            evaluator=None,
            samples_per_class=0,
            quantize=Q.Int8QAT(calibration_batches=1),
        )

    trained = method()
    trainer = cpu_trainer(2, enable_checkpointing=True, default_root_dir=tmp_path)
    trainer.fit(trained, train_dataloaders=random_digits_loader())
    trainer.save_checkpoint(tmp_path / "q.ckpt")
    with pytest.raises(ValueError, match="pass --quantize int8"):
        export_module(method(), ckpt_path=tmp_path / "q.ckpt", output=tmp_path / "x", format="onnx")
    assert not (tmp_path / "x").exists()
    out = export_module(
        method(),
        ckpt_path=tmp_path / "q.ckpt",
        output=tmp_path / "out",
        format="onnx",
        quantize="int8",
        int8_eval_samples=0,
    )
    report = json.loads((out / "onnx" / "report.json").read_text())
    assert "quantization-aware" in report["int8_qdq"]["origin"]
    assert (out / "quantization" / "int8_state.safetensors").is_file()
    rebuilt = Q.load_int8(out)
    from distill.deploy import onnx_parity

    # onnxruntime runs the QDQ file close to the run's own int8 graph, rebuilt from the folder
    assert onnx_parity(rebuilt, out / "onnx" / "model_int8_qdq.onnx")["relative_rmse"] < 0.2
    assert "int8" in (out / "README.md").read_text()


def test_distill_convert_gives_a_shipped_quantization_aware_student_its_own_int8_program(tmp_path):
    """`distill convert` on builtin:digits_consistency_qad: the copy keeps the folder, the int8 program is built
    from the folder's trained scales (not a new calibration) and computes the graph load_int8 rebuilds."""
    from distill.cli import main
    from distill.deploy import ExecuTorchDenoiser, executorch_parity

    out = tmp_path / "qad"
    source = ["--model", "builtin:digits_consistency_qad", "--out", str(out), "--format", "executorch"]
    main(["convert", *source, "--quantize", "int8", "--eval-samples", "0", "--max-batch", "4"])
    report = json.loads((out / "executorch" / "report.json").read_text())
    assert "the folder's int8 state" in report["int8"]["origin"]
    assert report["int8"]["macs"]["int8_share"] >= 0.9
    assert (out / "quantization" / "int8_state.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert card.startswith("#") and "## ExecuTorch (XNNPACK)" in card
    program = ExecuTorchDenoiser.from_export(out, variant="int8")
    parity = executorch_parity(Q.load_int8(out), program)
    assert parity["relative_rmse"] == pytest.approx(report["int8"]["parity"]["relative_rmse"], rel=1e-3)
    with pytest.raises(SystemExit):  # the output exists: refused, nothing touched
        main(["convert", *source])
    assert json.loads((out / "executorch" / "report.json").read_text()) == report
