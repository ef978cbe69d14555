"""ONNX export: `distill export --format onnx` (dynamic batch, onnxruntime check, int8 with its digits FID change),
and sampling from the ONNX file reproduces the PyTorch export's images."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import fit_config_one_step

from distill.export import export_module
from distill.onnx_export import input_spec, onnx_model
from distill.pipelines import sample_images
from teachers import DiffusionTeacher


def test_int8_or_a_bad_format_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="--format onnx"):
        export_module(None, ckpt_path=tmp_path / "x.ckpt", output=tmp_path / "out", int8=True)
    with pytest.raises(ValueError, match="format must be one of"):
        export_module(None, ckpt_path=tmp_path / "x.ckpt", output=tmp_path / "out", format="tflite")
    assert not (tmp_path / "out").exists()


def test_distill_export_onnx_checks_quantises_and_samples_like_pytorch(tmp_path, monkeypatch):
    import onnxruntime as ort

    from distill.cli import main

    monkeypatch.chdir(tmp_path)
    run, ckpt = fit_config_one_step("consistency.yaml", tmp_path)
    out = tmp_path / "export"
    main(
        [
            "export",
            "-c",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(ckpt),
            "--output",
            str(out),
            "--format",
            "onnx",
            "--int8",
            "true",
            "--int8_eval_samples",
            "20",
        ]
    )
    assert {p.name for p in (out / "onnx").iterdir()} == {"model.onnx", "model_int8.onnx", "report.json"}
    report = json.loads((out / "onnx" / "report.json").read_text())
    assert report["onnx"]["opset"] == 18
    assert report["onnx"]["max_abs_error"] <= 1e-4
    assert report["sizes"]["onnx int8"] < report["sizes"]["onnx"]
    quality = report["int8_quality"]
    assert quality["num_samples"] == 20 and quality["steps"] == 4  # an LCM export samples in 4 steps
    for label in ("fp32", "int8"):
        assert 0.0 <= quality[label]["accuracy"] <= 1.0 and quality[label]["fid_real"] > 0
    card = (out / "README.md").read_text()
    assert "## ONNX" in card and "opset 18" in card and "int8 vs fp32 ONNX on digits" in card

    # the graph takes any batch size, with the inputs the network's config calls for
    session = ort.InferenceSession(str(out / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    pytorch = DiffusionTeacher.from_pretrained(out)
    assert [i.name for i in session.get_inputs()] == list(input_spec(pytorch.unet))
    assert all(i.shape[0] == "batch" for i in session.get_inputs())

    # the ONNX file draws the PyTorch export's images (same seeds, consistency sampler, w embedding)
    idx = torch.arange(5)
    labels = torch.tensor([0, 3, 5, 7, 9])
    kwargs = dict(labels=labels, seeds=torch.full_like(idx, 11), indices=idx, steps=2)
    expected = sample_images(pytorch, **kwargs)
    got = sample_images(onnx_model(out), **kwargs)
    assert (got - expected).abs().max() <= 1e-4
    int8 = sample_images(onnx_model(out, int8=True), **kwargs)
    assert int8.shape == expected.shape and torch.isfinite(int8).all()
