"""Evaluate the shipped flow-matching digits teacher and its students by the protocol (configs/digits_flow/teacher_eval.yaml:
2,000 samples x seeds 0/1/2, the folder's own sampler: Euler for the teacher and the KD student, FlowMatchLCM
consistency steps for the consistency student; guidance 1) and write one JSON with the rows of each.

Run:  OMP_NUM_THREADS=2 python benchmarks/digits_flow.py   (about 30 minutes on 2 cores)
      ... --only digits_flow_consistency   (re-evaluate some; the others' entries are kept)
The teacher's entry is evaluated first; its 50-step row gives the noise floor, written into the reference
statistics (distill/assets/digits_flow_reference, built here when absent) as for the DDPM teacher. Writes
``benchmarks/results/digits_flow.json`` (MACs per forward, ``meta``: command, commit, config hash, date); the
digits-flow table of docs/methods.md and the students' cards are generated from it (benchmarks/update_docs.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from digits_runs import evaluate
from shipped_students import entry, save

from distill.provenance import provenance

ROOT = Path(__file__).resolve().parent
PROTOCOL = "configs/digits_flow/teacher_eval.yaml"
REFERENCE = ROOT.parent / "distill" / "assets" / "digits_flow_reference"
TEACHER = "digits_flow_teacher"
MODELS = {
    TEACHER: [50, 8, 4, 2, 1],
    "digits_flow_kd": [50],
    "digits_flow_consistency": [1, 2, 4, 8],
}


def folder_of(name: str) -> Path:
    if name == TEACHER:
        return ROOT.parent / "teachers" / "digits_flow"
    return ROOT.parent / "students" / "weights" / name


def python(*args: str) -> None:
    subprocess.run([sys.executable, *args], cwd=ROOT.parent, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "digits_flow.json")
    parser.add_argument("--only", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    meta = provenance(configs=[PROTOCOL])  # before the floors below rewrite the reference's record
    if not (REFERENCE / "features.safetensors").is_file():
        python(
            "-m",
            "distill.assets",
            "reference",
            "--teacher",
            "builtin:digits_flow",
            "--guidance",
            "1.0",
            "--steps",
            "50",
            "--out",
            str(REFERENCE),
        )
    with tempfile.TemporaryDirectory() as work:
        for name in sorted(args.only, key=lambda n: n != TEACHER):
            folder = folder_of(name)
            result = evaluate(
                folder,
                out=Path(work),
                tag=name,
                name=name,
                seeds=[0, 1, 2],
                num_samples=2000,
                eval_steps=MODELS[name],
                protocol=PROTOCOL,
            )
            if name == TEACHER:  # the noise floor: the teacher at the reference settings, against other seeds
                python(
                    "-m",
                    "distill.assets",
                    "floors",
                    "--eval",
                    str(Path(work) / f"{name}.json"),
                    "--steps",
                    "50",
                    "--out",
                    str(REFERENCE),
                )
            floor = json.loads((REFERENCE / "reference.json").read_text())["noise_floor"]
            results[name] = entry(folder, MODELS[name], result, meta=meta, noise_floor=floor)
            save(results, args.out, name)


if __name__ == "__main__":
    main()
