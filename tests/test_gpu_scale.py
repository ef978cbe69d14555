"""benchmarks/gpu_scale.py --smoke (make test-slow): every item of the GPU session runs at tiny size on the CPU,
writes its numbers to the JSON after each item, and the budget skips what would start too late."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_scale  # noqa: E402


@pytest.mark.slow
def test_every_item_runs_at_tiny_size_and_the_fit_resumes(tmp_path):
    report = gpu_scale.main(["--out", str(tmp_path), "--smoke", "--budget-s", "3600"])
    written = json.loads((tmp_path / "gpu_scale.json").read_text())
    assert written["items"].keys() == report["items"].keys() == gpu_scale.ITEMS.keys()
    for name, item in written["items"].items():
        assert "error" not in item, (name, item.get("traceback"))
        timings = [item] if "step_s_median" in item else [v for v in item.values() if isinstance(v, dict)]
        for timing in timings:
            if "step_s_median" in timing:
                assert timing["step_s_min"] <= timing["step_s_median"] <= timing["step_s_max"]
                assert timing["samples_per_s"] > 0 and timing["timed_steps"] == 2
    assert written["items"]["sd15_dmd2"]["generator_update"]["batch"] == 2
    fsdp = written["items"]["fsdp_resume"]
    assert fsdp["strategy"] == "auto"  # Lightning refuses FSDP on a CPU accelerator
    for name in ("kd", "lcm"):
        assert fsdp[name]["resumed_from_saved_step"], fsdp[name]
    assert written["environment"]["smoke"] and written["meta"]["commit"]


def test_the_budget_skips_items_that_would_start_late(tmp_path):
    report = gpu_scale.main(
        ["--out", str(tmp_path), "--smoke", "--budget-s", "0.5", "--only", "sd15_lcm", "sd3_kd"]
    )
    assert report["items"]["sd15_lcm"]["timed_steps"] == 2  # the first item starts at once
    assert "budget" in report["items"]["sd3_kd"]["skipped"]
