"""ONNX export: `distill export --format onnx` (dynamic batch, onnxruntime check, int8 with its digits FID change),
and sampling from the ONNX file reproduces the PyTorch export's images."""

from __future__ import annotations

import json
import re

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


def test_distill_convert_writes_onnx_for_a_folder_without_its_run_and_samples_like_pytorch(tmp_path, capsys):
    """`distill convert` copies an export folder (a shipped student has no run) and adds the ONNX file; `distill
    sample --runtime onnx` then draws the PyTorch images; what it cannot do is refused before anything is written."""
    from conftest import save_teacher_folder, tiny_cond_unet
    from torchvision.io import decode_image

    from distill.cli import main

    source = tmp_path / "student"
    save_teacher_folder(source, tiny_cond_unet(seed=5))
    (source / "README.md").write_text("# a student\n")
    out = tmp_path / "converted"
    main(["convert", "--model", str(source), "--out", str(out), "--format", "onnx", "--eval-samples", "0"])
    assert {p.name for p in out.iterdir()} == {"unet", "scheduler", "onnx", "README.md"}
    assert not (source / "onnx").exists()  # the source folder is not touched
    card = (out / "README.md").read_text()
    assert card.startswith("# a student\n") and "## ONNX" in card
    assert json.loads((out / "onnx" / "report.json").read_text())["onnx"]["max_abs_error"] <= 1e-4
    grids = {}
    for runtime in ("pytorch", "onnx"):
        files = tmp_path / runtime
        labels = ["--labels", "0", "4", "9", "--steps", "3", "--seed", "2"]
        main(
            [
                "sample",
                "--model",
                str(out),
                "--runtime",
                runtime,
                *labels,
                "--out",
                str(files / "g.png"),
                "--files",
                str(files),
            ]
        )
        grids[runtime] = torch.stack([decode_image(str(f)) for f in sorted(files.glob("0*.png"))]).int()
    assert grids["onnx"].shape[0] == 3
    assert (grids["onnx"] - grids["pytorch"]).abs().max() <= 1  # the same images, to PNG rounding

    refusals = {
        "int4w .*ExecuTorch only": ["--format", "onnx", "--quantize", "int4w"],
        "already exists": ["--format", "onnx"],
        "not an export folder": ["--format", "onnx", "--model", str(tmp_path)],
    }
    for message, args in refusals.items():
        target = out if message == "already exists" else tmp_path / "refused"
        argv = ["convert", "--model", str(source), "--out", str(target), *args]
        with pytest.raises(SystemExit):
            main(argv)
        assert re.search(message, capsys.readouterr().err), (message, argv)
        assert not (tmp_path / "refused").exists()
    assert "## ONNX" in (out / "README.md").read_text()  # the existing output is untouched
