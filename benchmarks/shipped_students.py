"""Re-evaluate the shipped digits teacher and every shipped digits student by the protocol (configs/digits/teacher_eval.yaml: 2,000 samples x
seeds 0/1/2, DDIM or consistency sampling by the folder's scheduler, guidance scale 1) at the step counts it was
made for, and write one JSON with the rows of each.

Run:  OMP_NUM_THREADS=2 python benchmarks/shipped_students.py   (about 25 minutes on 2 cores)
      ... --only teacher digits_consistency   (re-evaluate some; the others' entries are kept)
Writes ``benchmarks/results/shipped_students.json`` (each entry with its MACs per forward and ``meta``: command,
commit, config hash, date); the headline table of README, the students' cards and docs/results.md are generated
from it (``python benchmarks/update_docs.py``), so a change to sampling or evaluation that moved them shows.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from digits_runs import evaluate

from distill.flops import count_macs, example_inputs
from distill.provenance import provenance
from teachers import DiffusionTeacher

ROOT = Path(__file__).resolve().parent
PROTOCOL = "configs/digits/teacher_eval.yaml"
TEACHER = "teacher"
STUDENTS = {
    TEACHER: [50, 8, 4, 2, 1],
    "digits_efficient_kd": [50],
    "digits_efficient_kd_long": [50],
    "digits_consistency": [1, 2, 4, 8],
    "digits_progressive_1step": [1],
    "digits_progressive_2step": [2],
    "digits_progressive_4step": [4],
    "digits_progressive_8step": [8],
    "digits_dmd2_1step": [1],
    "digits_dmd2_2step": [2],
}


def folder_of(name: str) -> Path:
    """The shipped folder evaluated under ``name``: the digits teacher, or a student in students/weights."""
    if name == TEACHER:
        return ROOT.parent / "teachers" / "digits"
    return ROOT.parent / "students" / "weights" / name


def macs_per_forward(folder: Path) -> int:
    """MACs of one forward of the folder's network at batch 1 (fvcore plus our handles)."""
    unet = DiffusionTeacher.from_pretrained(str(folder)).unet
    return int(count_macs(unet, example_inputs(unet)).total)


def entry(folder: Path, steps: list[int], result: dict, *, meta: dict, noise_floor: dict) -> dict:
    """One model's record in a protocol result file: its folder, step counts, MACs, provenance and rows."""
    return {
        "folder": str(folder.relative_to(ROOT.parent)),
        "steps": steps,
        "macs_per_forward": macs_per_forward(folder),
        "meta": meta,
        "eval_minutes": round(result["eval_minutes"], 2),
        "rows": result["rows"],
        "noise_floor": noise_floor,
    }


def save(results: dict, out: Path, name: str) -> None:
    """Print ``name``'s FID vs real per step count and write ``results`` (sorted by name) to ``out``."""
    summary = {r["steps"]: r["summary"]["fid_real"] for r in results[name]["rows"]}
    print(name, {k: f"{v['mean']:.3f} ± {v['std']:.3f}" for k, v in summary.items()}, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(sorted(results.items())), indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "shipped_students.json")
    parser.add_argument("--only", nargs="+", choices=sorted(STUDENTS), default=sorted(STUDENTS))
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    with tempfile.TemporaryDirectory() as work:
        for name in args.only:
            folder = folder_of(name)
            result = evaluate(
                folder,
                out=Path(work),
                tag=name,
                name=name,
                seeds=[0, 1, 2],
                num_samples=2000,
                eval_steps=STUDENTS[name],
            )
            results[name] = entry(
                folder,
                STUDENTS[name],
                result,
                meta=provenance(configs=[PROTOCOL]),
                noise_floor=result["noise_floor"],
            )
            save(results, args.out, name)


if __name__ == "__main__":
    main()
