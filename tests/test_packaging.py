"""The wheel: built from pyproject.toml without setuptools warnings, holding every module of ours (subpackages
included) and the shipped weights, configs and model cards (teachers/digits, students/weights, distill/assets)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("distill", "students", "teachers")
SHIPPED = {".py", ".json", ".safetensors", ".md", ".pt", ".typed"}

BUILD = """
import sys
from setuptools import build_meta
print("WHEEL", build_meta.build_wheel(sys.argv[1]))
"""


def test_wheel_builds_without_warnings_and_holds_every_package_and_data_file(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", BUILD, str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    for text in ("would be ignored", "license", "Warning", "deprecated"):
        assert text not in log, f"{text!r} in the build output:\n{log}"
    wheel = out / re.search(r"^WHEEL (\S+)$", done.stdout, re.MULTILINE).group(1)
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        path.relative_to(source).as_posix()
        for package in PACKAGES
        for path in (source / package).rglob("*")
        if path.is_file() and path.suffix in SHIPPED
    }
    assert expected - names == set()
    for required in (
        "distill/objectives/__init__.py",
        "distill/methods/base.py",
        "distill/flops/__init__.py",
        "teachers/digits/unet/diffusion_pytorch_model.safetensors",
        "teachers/digits/scheduler/scheduler_config.json",
        "teachers/digits_flow/unet/diffusion_pytorch_model.safetensors",
        "teachers/digits_flow/scheduler/scheduler_config.json",
        "students/weights/digits_flow_consistency/unet/diffusion_pytorch_model.safetensors",
        "distill/assets/digits_flow_reference/features.safetensors",
        "students/weights/digits_consistency/unet/diffusion_pytorch_model.safetensors",
        "distill/assets/digits_classifier/model.safetensors",
        "distill/assets/digits_reference/features.safetensors",
    ):
        assert required in names, required
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()
