"""Retrain every shipped digits artefact from its config, in dependency order, and time each one.

Run:  python benchmarks/reproduce.py [--out runs/reproduce] [--only teacher classifier ...] [--dry-run]
(``make reproduce``). Writes into ``--out`` only (never over the shipped assets); ``reproduce.json`` there records
each stage's command, wall minutes and outputs. Compare the rebuilt artefacts with the shipped ones by evaluating
them (``distill test -c configs/digits/teacher_eval.yaml --model.init_args.model.init_args.path=...``).

Stages (recorded times of the shipped artefacts, 2 CPU cores shared with other work): the teacher (5,000 steps,
54 min), the evaluator's classifier (minutes), the KD-distilled efficient UNets (1,000 steps, 15 min; 4,000
steps, 34 min), the consistency student (500 steps, about 5 min) and the progressive students (6 rounds x 400
steps, about 30 min).
The later stages start from the shipped teacher and KD student (``builtin:``), exactly as their configs say, so
any stage can be rerun alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DISTILL = str(Path(sys.executable).parent / "distill")


def stages(out: Path) -> dict[str, list[list[str]]]:
    def fit(config: str, name: str) -> list[str]:
        return [
            DISTILL,
            "fit",
            "-c",
            f"configs/digits/{config}",
            f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.logger.init_args.name={name}",
            "--trainer.logger.init_args.version=0",
            "--trainer.enable_progress_bar=false",
        ]

    def export(kind: str, name: str, target: str) -> list[str]:
        run = out / name / "version_0"
        return [
            sys.executable,
            "-m",
            "distill.assets",
            kind,
            "--config",
            str(run / "config.yaml"),
            "--ckpt",
            str(run / "checkpoints" / "last.ckpt"),
            "--out",
            str(out / target),
            "--overwrite",
        ]

    return {
        "teacher": [fit("teacher.yaml", "teacher"), export("teacher", "teacher", "assets/teacher")],
        "classifier": [
            fit("classifier.yaml", "classifier"),
            export("classifier", "classifier", "assets/classifier"),
        ],
        "kd_efficient": [
            fit("kd_efficient.yaml", "kd_efficient"),
            export("student", "kd_efficient", "students/digits_efficient_kd"),
        ],
        "kd_efficient_long": [
            fit("kd_efficient_long.yaml", "kd_efficient_long"),
            export("student", "kd_efficient_long", "students/digits_efficient_kd_long"),
        ],
        "consistency": [
            fit("consistency.yaml", "consistency"),
            [
                DISTILL,
                "export",
                "-c",
                str(out / "consistency/version_0/config.yaml"),
                f"--ckpt_path={out / 'consistency/version_0/checkpoints/last.ckpt'}",
                f"--output={out / 'students/digits_consistency'}",
                "--overwrite=true",
            ],
        ],
        "progressive": [
            [
                sys.executable,
                "benchmarks/digits_step_distillation.py",
                "--only",
                "progressive",
                "--out",
                str(out / "progressive_students"),
            ]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--only", nargs="+", default=None)
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args()
    plan = stages(args.out)
    chosen = args.only or list(plan)
    unknown = sorted(set(chosen) - set(plan))
    if unknown:
        raise SystemExit(f"unknown stages {unknown}; choose from {list(plan)}")
    record = []
    for name in chosen:
        start = time.time()
        for command in plan[name]:
            print("$", " ".join(command), flush=True)
            if not args.dry_run:
                subprocess.run(command, cwd=ROOT, check=True)
        minutes = (time.time() - start) / 60
        record.append({"stage": name, "commands": [" ".join(c) for c in plan[name]], "minutes": minutes})
        print(f"{name}: {minutes:.1f} min", flush=True)
    if not args.dry_run:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "reproduce.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
