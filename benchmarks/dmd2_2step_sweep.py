"""The two-step DMD2 digits student at other generator GAN weights: configs/digits/dmd2_2step.yaml (seed 0, 9,000
batches) with ``gan_generator_weight`` overridden, each student exported (EMA) and evaluated by the protocol
(configs/digits/teacher_eval.yaml: 2,000 samples x seeds 0/1/2, 2 steps), beside the shipped student (weight 0.1)
and the progressive two-step student it has to beat on every seed.

Run:  OMP_NUM_THREADS=1 python benchmarks/dmd2_2step_sweep.py   (one full run of the config per weight, its
      header gives the cost; run two at once with --only)
      ... --from-run 0.3=RUN_DIR   (export and evaluate a finished ``distill fit`` run of the same config instead
      of training it; RUN_DIR holds config.yaml and checkpoints/last.ckpt)
Writes ``benchmarks/results/dmd2_2step_sweep.json`` (docs/distribution_matching.md's sweep table is generated from
it by ``python benchmarks/update_docs.py``); entries for weights not run are kept.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from digits_runs import evaluate, export, fit

from distill.provenance import provenance

ROOT = Path(__file__).resolve().parent
CONFIG = "configs/digits/dmd2_2step.yaml"
SHIPPED = ROOT / "results" / "shipped_students.json"
WEIGHTS = ("0.3", "1.0")
STEPS = [2]


def variant(weight: str, *, work: Path, run_dir: Path | None) -> dict:
    """Train (unless ``run_dir`` is given), export and evaluate the config at generator GAN weight ``weight``."""
    fit_minutes = None
    if run_dir is None:
        fit_minutes = fit(
            config=CONFIG, overrides=[f"--model.init_args.gan_generator_weight={weight}"], out=work
        )
        run_dir = work / "fit" / "version_0"
    student = export(run_dir, run_dir / "checkpoints" / "last.ckpt", work / "student", work / "export.log")
    result = evaluate(
        student,
        out=work,
        tag="eval",
        name=f"dmd2_2step_gan{weight}",
        seeds=[0, 1, 2],
        num_samples=2000,
        eval_steps=STEPS,
    )
    return {
        "gan_generator_weight": float(weight),
        "fit_minutes": fit_minutes,
        "eval_minutes": round(result["eval_minutes"], 2),
        "rows": result["rows"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "dmd2_2step_sweep.json")
    parser.add_argument("--only", nargs="+", default=list(WEIGHTS), help="generator GAN weights to run")
    parser.add_argument(
        "--from-run",
        nargs="+",
        default=[],
        metavar="WEIGHT=RUN_DIR",
        help="evaluate a finished run of the config at this weight instead of training it",
    )
    args = parser.parse_args()
    runs = dict(item.split("=", 1) for item in args.from_run)
    unknown = set(runs) - set(args.only)
    if unknown:
        parser.error(f"--from-run names weights not in --only: {sorted(unknown)}")
    result = json.loads(args.out.read_text()) if args.out.is_file() else {"variants": {}}
    shipped = json.loads(SHIPPED.read_text())
    # the rows every variant is compared with, copied from the shipped students' protocol results
    result["shipped"] = {"gan_generator_weight": 0.1, "rows": shipped["digits_dmd2_2step"]["rows"]}
    result["progressive"] = {"rows": shipped["digits_progressive_2step"]["rows"]}
    for weight in args.only:
        with tempfile.TemporaryDirectory() as work:
            run_dir = Path(runs[weight]) if weight in runs else None
            entry = variant(weight, work=Path(work), run_dir=run_dir)
        entry["meta"] = provenance(configs=[CONFIG, "configs/digits/teacher_eval.yaml"])
        entry["trained_by"] = f"distill fit -c {CONFIG} --model.init_args.gan_generator_weight={weight}" + (
            " (a finished run, exported and evaluated here)" if weight in runs else ""
        )
        result["meta"] = entry["meta"]
        result["variants"][weight] = entry
        per_seed = [round(s["fid_real"], 4) for s in entry["rows"][0]["per_seed"]]
        print(f"gan_generator_weight {weight}: FID vs real per seed {per_seed}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
