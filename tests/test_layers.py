"""The package layers (pyproject's ``[tool.importlinter]`` contracts) hold, and an upward import breaks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(root), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for package in ("distill", "students", "teachers"):
        shutil.copytree(
            ROOT / package, root / package, ignore=shutil.ignore_patterns("*.safetensors", "*.pt")
        )
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_layer_contracts_hold():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert " 0 broken" in out.stdout and " kept" in out.stdout, out.stdout


@pytest.mark.parametrize(
    ("file", "line", "broken"),
    [
        ("students/common.py", "import distill.methods.base", "students import nothing of ours"),
        ("teachers/schedule.py", "import distill.rng", "teachers and the maths import no training code"),
        ("distill/metrics.py", "import lightning", "maths, metrics, losses and FLOP counting"),
        ("distill/rng.py", "import distill.methods.knowledge", "no import cycles"),
    ],
)
def test_an_upward_import_breaks_a_contract(tmp_path, file, line, broken):
    root = _copy(tmp_path)
    path = root / file
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    path.write_text(text.replace(marker, marker + line + "  # noqa\n", 1))
    out = _lint(root)
    assert out.returncode != 0, out.stdout
    report = out.stdout.split("Broken contracts")[-1]
    assert broken in report, out.stdout
