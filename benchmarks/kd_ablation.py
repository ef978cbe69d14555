"""Loss ablation of knowledge distillation on digits: task only, + output KD, + feature KD, same budget.

Each arm trains ``configs/digits/kd.yaml`` for the same number of steps (same seed, same teacher
initialisation, same data order), exports the EMA student and evaluates it with the teacher's protocol
(``configs/digits/teacher_eval.yaml``: 2,000 samples per seed, seeds 0/1/2, DDIM 50 steps, trailing spacing).

Run:  python benchmarks/kd_ablation.py [--steps 1000] [--out runs/kd_ablation]
      (about 20 minutes per arm on 2 idle CPU cores: 9 training, 10 evaluation)
Writes ``OUT/kd_ablation.json`` and ``OUT/kd_ablation.md`` (the table README quotes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from digits_runs import ROOT, cell, fresh_dir, train_export_evaluate

ARMS = {  # name -> (task, output KD, feature KD) weights
    "task only": (1.0, 0.0, 0.0),
    "task + output KD": (1.0, 1.0, 0.0),
    "task + output KD + feature KD (BK-SDM)": (1.0, 1.0, 1.0),
}


def run_arm(
    name: str,
    weights: tuple[float, float, float],
    *,
    steps: int,
    out: Path,
    seeds: list[int],
    num_samples: int,
    overwrite: bool = False,
) -> dict:
    slug = name.split(" (")[0].replace(" + ", "_").replace(" ", "_").lower()
    task, output, feature = weights
    result = train_export_evaluate(
        config="configs/digits/kd.yaml",
        overrides=[
            f"--model.init_args.task_weight={task}",
            f"--model.init_args.output_weight={output}",
            f"--model.init_args.feature_weight={feature}",
            f"--trainer.max_steps={steps}",
            "--trainer.limit_val_batches=0",
        ],
        out=fresh_dir(out / slug, overwrite),
        name=name,
        seeds=seeds,
        num_samples=num_samples,
        eval_steps=[50],
    )
    return {
        "arm": name,
        "weights": {"task": task, "output_kd": output, "feature_kd": feature},
        "steps": steps,
        "fit_minutes": result["fit_minutes"],
        "eval_minutes": result["eval_minutes"],
        "summary": result["rows"][0]["summary"],
        "noise_floor": result["noise_floor"],
    }


def to_markdown(results: list[dict]) -> str:
    lines = [
        "| loss | steps | FID vs real | FID vs teacher ref | accuracy (%) | train time |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        s = r["summary"]
        lines.append(
            f"| {r['arm']} | {r['steps']} | {cell(s, 'fid_real')} | {cell(s, 'fid_ref')} | "
            f"{cell(s, 'accuracy', 100.0, 1)} | {r['fit_minutes']:.1f} min |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1000, help="training steps per arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="evaluation seeds")
    parser.add_argument("--num-samples", type=int, default=2000, help="samples per evaluation seed")
    parser.add_argument("--out", type=Path, default=Path("runs/kd_ablation"))
    parser.add_argument("--overwrite", action="store_true", help="replace the arms' earlier outputs")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    args = parser.parse_args(argv)
    out = args.out if args.out.is_absolute() else ROOT / args.out
    results = []
    for name in args.arms:
        print(f"[kd_ablation] {name}: training {args.steps} steps, then evaluating", flush=True)
        results.append(
            run_arm(
                name,
                ARMS[name],
                steps=args.steps,
                out=out,
                seeds=args.seeds,
                num_samples=args.num_samples,
                overwrite=args.overwrite,
            )
        )
        (out / "kd_ablation.json").write_text(json.dumps(results, indent=2) + "\n")
    table = to_markdown(results)
    (out / "kd_ablation.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
