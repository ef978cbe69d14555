"""Step distillation on digits: train the progressive and consistency configs, evaluate by the protocol at
1, 2, 4 and 8 steps, and put them beside the teacher's own DDIM at the same step counts.

Run:  python benchmarks/digits_step_distillation.py [--only consistency] [--teacher-eval runs/.../eval.json]
Writes ``OUT/step_distillation.json`` and ``OUT/step_distillation.md``. The teacher's rows come from a
``distill test -c configs/digits/teacher_eval.yaml`` result (``--teacher-eval``), run here if not given.
MACs per sample = MACs per forward x steps x forwards per step (2 for the teacher's CFG when guided, 1 for
students that take the guidance scale as an input).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from digits_runs import ROOT, cell, evaluate, export, fit, fresh_dir, run
from digits_students import costs, network_costs

CONFIGS = {"progressive": "progressive distillation", "consistency": "consistency distillation (LCM)"}


def round_students(run_dir: Path, steps: list[int]) -> dict[int, Path]:
    """Progressive distillation keeps one student per round: the checkpoint at each round's end (the config saves
    every ``round_steps``) holds the student that samples in that round's step count."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["init_args"]
    teacher_steps, round_steps = int(config["teacher_steps"]), int(config["round_steps"])
    found = {}
    n, index = teacher_steps, 0
    while n > int(config["final_steps"]):
        n //= 2
        index += 1
        if n in steps:
            matches = list((run_dir / "checkpoints").glob(f"*step={index * round_steps}.ckpt"))
            if not matches:
                raise SystemExit(
                    f"no checkpoint at the end of round {index} (step {index * round_steps}) in {run_dir}"
                )
            found[n] = matches[0]
    return found


def fit_minutes(run_dir: Path) -> float:
    """Wall minutes from the run's saved config (written at the start) to its last checkpoint."""
    start = (run_dir / "config.yaml").stat().st_mtime
    return ((run_dir / "checkpoints" / "last.ckpt").stat().st_mtime - start) / 60


def to_markdown(teacher: dict, results: list[dict]) -> str:
    lines = [
        "| model | steps | FID vs real | FID vs teacher ref | KID vs real (x1e3) | accuracy (%) | MACs / sample | "
        "train time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    t_macs = teacher["macs_per_forward"]
    for row in teacher["rows"]:
        s = row["summary"]
        lines.append(
            f"| teacher (DDIM) | {row['steps']} | {cell(s, 'fid_real')} | {cell(s, 'fid_ref')} | "
            f"{cell(s, 'kid_real', 1e3, 2)} | {cell(s, 'accuracy', 100.0, 1)} | "
            f"{t_macs * row['steps'] / 1e6:.0f}M | |"
        )
    for r in results:
        macs = r["costs"]["student"]["macs_per_forward"]
        for row in r["rows"]:
            s = row["summary"]
            lines.append(
                f"| {r['label']} | {row['steps']} | {cell(s, 'fid_real')} | {cell(s, 'fid_ref')} | "
                f"{cell(s, 'kid_real', 1e3, 2)} | {cell(s, 'accuracy', 100.0, 1)} | "
                f"{macs * row['steps'] / 1e6:.0f}M | {r['fit_minutes']:.0f} min |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8], help="evaluation step counts")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument(
        "--teacher-eval", type=Path, default=None, help="eval.json of the teacher's protocol run"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/step_distillation"))
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument(
        "--reuse-fit", action="store_true", help="evaluate the finished runs under --out instead of training"
    )
    args = parser.parse_args(argv)
    out = args.out if args.out.is_absolute() else ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    teacher_eval = args.teacher_eval
    if teacher_eval is None:
        teacher_eval = out / "teacher_eval.json"
        run(
            [
                "-m",
                "distill.cli",
                "test",
                "-c",
                "configs/digits/teacher_eval.yaml",
                f"--model.init_args.steps={json.dumps(sorted(args.steps, reverse=True))}",
                f"--model.init_args.output={teacher_eval}",
                f"--data.init_args.seeds={json.dumps(args.seeds)}",
                f"--data.init_args.num_samples={args.num_samples}",
                "--trainer.logger=false",
            ],
            out / "teacher_eval.log",
        )
    teacher_rows = [r for r in json.loads(teacher_eval.read_text())["rows"] if r["steps"] in args.steps]
    results = []
    for name in args.only:
        out_dir = out / name
        if args.reuse_fit:
            if not (out_dir / "fit" / "version_0" / "checkpoints" / "last.ckpt").is_file():
                raise SystemExit(f"--reuse-fit: no finished run at {out_dir / 'fit' / 'version_0'}")
        else:
            fit(
                config=f"configs/digits/{name}.yaml",
                overrides=["--trainer.limit_val_batches=0"],
                out=fresh_dir(out_dir, args.overwrite),
            )
        run_dir = out_dir / "fit" / "version_0"
        ckpts = (
            round_students(run_dir, args.steps)
            if name == "progressive"
            else {None: run_dir / "checkpoints" / "last.ckpt"}
        )
        rows, noise_floor, students = [], None, {}
        for steps, ckpt in ckpts.items():
            tag = "student" if steps is None else f"student_{steps}step"
            student = export(run_dir, ckpt, out_dir / tag, out_dir / f"export_{tag}.log")
            result = evaluate(
                student,
                out=out_dir,
                tag=f"eval_{tag}",
                name=CONFIGS[name],
                seeds=args.seeds,
                num_samples=args.num_samples,
                eval_steps=args.steps if steps is None else [steps],
            )
            rows += result["rows"]
            noise_floor = result["noise_floor"]
            students[str(steps or "all")] = str(student)
        result = {
            "fit_minutes": fit_minutes(run_dir),
            "rows": sorted(rows, key=lambda r: r["steps"]),
            "noise_floor": noise_floor,
            "students": students,
            "label": CONFIGS[name],
            "costs": costs(Path(next(iter(students.values())))),
        }
        results.append(result)
    teacher = {
        "rows": sorted(teacher_rows, key=lambda r: r["steps"]),
        "macs_per_forward": network_costs("builtin:digits")["macs_per_forward"],
    }
    (out / "step_distillation.json").write_text(
        json.dumps({"teacher": teacher, "students": results}, indent=2) + "\n"
    )
    table = to_markdown(teacher, results)
    (out / "step_distillation.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
