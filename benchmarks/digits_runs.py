"""Shared by the digits benchmark scripts: train a config, export its EMA student, evaluate it by the protocol."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the scripts' own imports of this package (provenance included) come from this checkout, as the runs they start do
# (``python -m`` in ROOT), even where the environment installed another checkout
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run(args: list[str], log: Path) -> float:
    """``python ARGS`` in the repository root, output to ``log``; returns the wall time in seconds."""
    start = time.perf_counter()
    with log.open("w") as handle:
        subprocess.run([sys.executable, *args], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def fresh_dir(path: Path, overwrite: bool) -> Path:
    if path.exists():
        if not overwrite:
            raise SystemExit(f"{path} exists from an earlier run; pass --overwrite to replace it")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def fit(*, config: str, overrides: list[str], out: Path) -> float:
    """``distill fit`` into ``out/fit/version_0``; returns wall minutes."""
    seconds = run(
        [
            "-m",
            "distill.cli",
            "fit",
            "-c",
            config,
            *overrides,
            f"--trainer.logger.init_args.save_dir={out}",
            "--trainer.logger.init_args.name=fit",
            "--trainer.logger.init_args.version=0",
        ],
        out / "fit.log",
    )
    return seconds / 60


def export(run_dir: Path, ckpt: Path, student: Path, log: Path, average: list[Path] | None = None) -> Path:
    """The EMA student of ``ckpt`` (with the method's scheduler) as a diffusers folder; with ``average``, the
    uniform mean of those checkpoints' EMA weights and ``ckpt``'s."""
    run(
        [
            "-m",
            "distill.assets",
            "student",
            "--config",
            str(run_dir / "config.yaml"),
            "--ckpt",
            str(ckpt),
            "--out",
            str(student),
            "--overwrite",
            *(["--average", *map(str, average)] if average else []),
        ],
        log,
    )
    return student


def evaluate(
    student: Path | None,
    *,
    out: Path,
    tag: str,
    name: str,
    seeds: list[int],
    num_samples: int,
    eval_steps: list[int],
    protocol: str = "configs/digits/teacher_eval.yaml",
    model_overrides: list[str] | None = None,
) -> dict:
    """The protocol (``protocol``: configs/digits/teacher_eval.yaml, or configs/digits_flow/teacher_eval.yaml with
    the flow teacher's reference) on ``student`` at ``eval_steps``; ``model_overrides`` replace the folder argument
    (another model factory, e.g. ``distill.deploy.executorch_model`` for an ExecuTorch program)."""
    eval_json = out / f"{tag}.json"
    seconds = run(
        [
            "-m",
            "distill.cli",
            "test",
            "-c",
            protocol,
            *(model_overrides or [f"--model.init_args.model.init_args.path={student}"]),
            f"--model.init_args.name={name}",
            f"--model.init_args.steps={json.dumps(eval_steps)}",
            f"--model.init_args.output={eval_json}",
            f"--data.init_args.seeds={json.dumps(seeds)}",
            f"--data.init_args.num_samples={num_samples}",
            f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.logger.init_args.name={tag}",
            "--trainer.logger.init_args.version=0",
        ],
        out / f"{tag}.log",
    )
    result = json.loads(eval_json.read_text())
    return {"eval_minutes": seconds / 60, "rows": result["rows"], "noise_floor": result["noise_floor"]}


def train_export_evaluate(
    *,
    config: str,
    overrides: list[str],
    out: Path,
    name: str,
    seeds: list[int],
    num_samples: int,
    eval_steps: list[int],
) -> dict:
    """Fit ``config`` (+ overrides) into ``out/fit``, export the EMA student to ``out/student`` and evaluate it
    with configs/digits/teacher_eval.yaml at ``eval_steps``; returns times and the evaluation's rows."""
    fit_minutes = fit(config=config, overrides=overrides, out=out)
    run_dir = out / "fit" / "version_0"
    student = export(run_dir, run_dir / "checkpoints" / "last.ckpt", out / "student", out / "export.log")
    result = evaluate(
        student, out=out, tag="eval", name=name, seeds=seeds, num_samples=num_samples, eval_steps=eval_steps
    )
    return {"fit_minutes": fit_minutes, **result, "student": str(student)}


def cell(summary: dict, key: str, scale: float = 1.0, digits: int = 3) -> str:
    value = summary[key]
    return f"{value['mean'] * scale:.{digits}f} ± {value['std'] * scale:.{digits}f}"
