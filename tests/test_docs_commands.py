"""The shell commands in README.md and docs/ run as written.

Every ```bash fence is marked on the line before it: ``<!-- run: ... -->`` (executed here, the Stable Diffusion
workflow on its CPU smoke settings), ``<!-- parsed: ... -->`` (every ``distill`` command in it is parsed by the
CLI, which refuses unknown keys and wrong types; the configs themselves are trained by tests/test_configs.py) or
``<!-- not-run: REASON -->``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?:^(<!-- (run|parsed|not-run):?([^>]*)-->)\n)?^```bash\n(.*?)^```", re.M | re.S)


def fences(page: Path) -> list[tuple[str | None, str, str]]:
    """``(marker kind, marker text, body)`` of every bash fence on ``page``."""
    return [(m.group(2), (m.group(3) or "").strip(), m.group(4)) for m in FENCE.finditer(page.read_text())]


def commands(body: str) -> list[str]:
    """The command lines of a fence body: continuation lines joined, comments and ``[optional]`` parts dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(re.sub(r"\s*\[--[^\]]*\]", "", line))
    return out


def test_every_shell_fence_is_run_parsed_or_says_why_not():
    unmarked = []
    for page in PAGES:
        for kind, text, body in fences(page):
            if kind is None:
                unmarked.append(f"{page.relative_to(ROOT)}: {body.splitlines()[0]}")
            elif kind == "not-run":
                assert text, f"{page.relative_to(ROOT)}: not-run needs a reason ({body.splitlines()[0]})"
    assert not unmarked, f"bash fences without a run/parsed/not-run marker: {unmarked}"


def _parsed_commands() -> list[str]:
    found = []
    for page in PAGES:
        for kind, _, body in fences(page):
            if kind == "parsed":
                found += [c for c in commands(body) if c.startswith("distill ")]
    return found


@pytest.mark.parametrize("command", _parsed_commands())
def test_documented_command_parses(command, capsys, monkeypatch):
    """The CLI accepts the command as written (keys, types, config files); ``--print_config`` stops before
    anything is built or written."""
    from distill.cli import main

    args = shlex.split(command)[1:]
    monkeypatch.setattr(sys, "argv", ["distill"])
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err[-2000:]
    assert "model:" in capsys.readouterr().out


def _sd_blocks() -> tuple[str, str]:
    page = ROOT / "docs" / "stable_diffusion.md"
    run = [body for kind, _, body in fences(page) if kind == "run"]
    assert len(run) == 2, "docs/stable_diffusion.md: the workflow block and its CPU smoke settings"
    workflow, smoke = run
    return smoke, workflow


def test_sd_workflow_uses_each_recipes_own_keys():
    """lcm.yaml's student is load_student (key ``path``), kd_bk_small's is bk_small (key ``teacher``)."""
    _, workflow = _sd_blocks()
    for line in commands(workflow):
        if "configs/sd15/lcm.yaml" in line:
            assert "student.init_args.path=" in line and "student.init_args.teacher=" not in line
        if "configs/sd15/kd_bk_small.yaml" in line:
            assert "student.init_args.teacher=" in line


@pytest.mark.slow
def test_sd_workflow_runs_as_written_on_its_cpu_smoke_settings(tmp_path):
    """The documented Stable Diffusion commands, run by bash exactly as written after the CPU smoke settings
    (with /tmp/sd-smoke moved into a temporary folder): precompute, KD fit, export, LCM fit, export."""
    from diffusers import LatentConsistencyModelPipeline, StableDiffusionPipeline

    smoke, workflow = _sd_blocks()
    script = "set -euo pipefail\n" + (smoke + workflow).replace("/tmp/sd-smoke", str(tmp_path / "sd-smoke"))
    script = script.replace("set -euo pipefail", "set -eo pipefail")  # ${CPU} may be unset on a GPU
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exports = tmp_path / "sd-smoke" / "exports"
    kd = StableDiffusionPipeline.from_pretrained(exports / "bk_small", safety_checker=None)
    lcm = LatentConsistencyModelPipeline.from_pretrained(exports / "lcm", safety_checker=None)
    for pipe, steps in ((kd, 2), (lcm, 2)):
        out = pipe("a red square", num_inference_steps=steps, output_type="np", height=16, width=16)
        assert out.images.shape == (1, 16, 16, 3)
