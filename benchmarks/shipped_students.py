"""Re-evaluate every shipped digits student by the protocol (configs/digits/teacher_eval.yaml: 2,000 samples x
seeds 0/1/2, DDIM or consistency sampling by the folder's scheduler, guidance scale 1) at the step counts it was
made for, and write one JSON with the rows of each.

Run:  OMP_NUM_THREADS=2 python benchmarks/shipped_students.py   (about 10 minutes on 2 cores)
Writes ``benchmarks/results/shipped_students.json``; the step-distillation and KD tables of README quote these
students, so a change to sampling or evaluation code that moved them would show here.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from digits_runs import evaluate

ROOT = Path(__file__).resolve().parent
STUDENTS = {
    "digits_efficient_kd_long": [50],
    "digits_consistency": [1, 2, 4, 8],
    "digits_progressive_1step": [1],
    "digits_progressive_2step": [2],
    "digits_progressive_4step": [4],
    "digits_progressive_8step": [8],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "shipped_students.json")
    parser.add_argument("--only", nargs="+", choices=sorted(STUDENTS), default=sorted(STUDENTS))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for name in args.only:
            result = evaluate(
                ROOT.parent / "students" / "weights" / name,
                out=Path(work),
                tag=name,
                name=name,
                seeds=[0, 1, 2],
                num_samples=2000,
                eval_steps=STUDENTS[name],
            )
            results[name] = {
                "steps": STUDENTS[name],
                "eval_minutes": round(result["eval_minutes"], 2),
                "rows": result["rows"],
            }
            summary = {r["steps"]: r["summary"]["fid_real"] for r in result["rows"]}
            print(name, {k: f"{v['mean']:.3f} ± {v['std']:.3f}" for k, v in summary.items()}, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
