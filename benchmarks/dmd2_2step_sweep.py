"""The two-step DMD2 digits student in other settings: configs/digits/dmd2_2step.yaml (seed 0, 9,000 batches) with
some of its arguments overridden (``VARIANTS``: the generator's GAN weight and lr, the critic's GAN weight and noise
range, the generator's start, the second step's time: ``original_steps`` picks LCM's grid, 50 -> 999, 499 as shipped,
5 -> 999, 599, or custom ``timesteps`` on the grid of 50, e.g. 999, 299; and the training seed), each student
exported (EMA) and evaluated by the protocol (configs/digits/teacher_eval.yaml: 2,000 samples x seeds 0/1/2, 2
steps), beside the shipped student (weight 0.1, times 999, 499) and the progressive two-step student it has to beat
on every seed.

Run:  OMP_NUM_THREADS=1 python benchmarks/dmd2_2step_sweep.py   (one full run of the config per variant, its
      header gives the cost; run two at once with --only)
      ... --only 0.3-t599 --from-run 0.3-t599=RUN_DIR   (export and evaluate a finished ``distill fit`` run of the
      variant instead of training it; RUN_DIR holds config.yaml and checkpoints/last.ckpt)
Writes ``benchmarks/results/dmd2_2step_sweep.json`` (docs/distribution_matching.md's sweep table is generated from
it by ``python benchmarks/update_docs.py``); entries for variants not run are kept.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from digits_runs import evaluate, export, fit

from distill.provenance import provenance
from teachers.schedule import NoiseSchedule

ROOT = Path(__file__).resolve().parent
CONFIG = "configs/digits/dmd2_2step.yaml"
SHIPPED = ROOT / "results" / "shipped_students.json"
SCHEDULER = ROOT.parent / "students" / "weights" / "digits_dmd2_2step" / "scheduler" / "scheduler_config.json"
# the config's values of what the variants override
DEFAULTS = {
    "gan_generator_weight": 0.1,
    "original_steps": 50,
    "timesteps": None,
    "optimizer.init_args.lr": 5e-5,
    "gan_critic_weight": 0.3,
    "gan_time_max": 0.5,
    "student.init_args.path": "builtin:digits_dmd2_1step",
    "seed_everything": 0,
}
# name -> the method arguments overridden; "0.3-more" is a longer run: 9,000 more batches from the shipped two-step
# student (its critic and fake score start afresh from the config's networks)
VARIANTS = {
    "0.3": {"gan_generator_weight": 0.3},
    "1.0": {"gan_generator_weight": 1.0},
    "0.3-t599": {"gan_generator_weight": 0.3, "original_steps": 5},
    "0.3-more": {"gan_generator_weight": 0.3, "student.init_args.path": "builtin:digits_dmd2_2step"},
    "0.3-t299": {"gan_generator_weight": 0.3, "timesteps": [999, 299]},
    "0.3-t199": {"gan_generator_weight": 0.3, "timesteps": [999, 199]},
    "0.3-lr2.5e-5": {"gan_generator_weight": 0.3, "optimizer.init_args.lr": 2.5e-5},
    "0.3-lr1.25e-5": {"gan_generator_weight": 0.3, "optimizer.init_args.lr": 1.25e-5},
    "0.3-gt0.25": {"gan_generator_weight": 0.3, "gan_time_max": 0.25},
    "0.3-critic1": {"gan_generator_weight": 0.3, "gan_critic_weight": 1.0},
    "0.3-gt0.1": {"gan_generator_weight": 0.3, "gan_time_max": 0.1},
    "0.3-gt0.25-critic1": {"gan_generator_weight": 0.3, "gan_time_max": 0.25, "gan_critic_weight": 1.0},
    # the same run with other training seeds: how far two runs of one config differ
    "0.3-gt0.25-seed1": {"gan_generator_weight": 0.3, "gan_time_max": 0.25, "seed_everything": 1},
    "0.3-gt0.25-seed2": {"gan_generator_weight": 0.3, "gan_time_max": 0.25, "seed_everything": 2},
}
STEPS = [2]


def timesteps(original_steps: int, custom: list[int] | None = None, num_steps: int = 2) -> list[int]:
    """The generator's sampling times: ``custom`` when given, else LCM's on the ``original_steps`` grid (what its
    exported LCMScheduler uses)."""
    if custom is not None:
        return list(custom)
    schedule = NoiseSchedule.from_scheduler_config(json.loads(SCHEDULER.read_text()))
    return [int(t) for t in schedule.consistency_grid(num_steps, original_steps=original_steps)]


def overrides(name: str) -> list[str]:
    """The ``distill fit`` arguments of variant ``name`` (the training seed is top level, the rest method arguments)."""
    return [
        f"--{key if key == 'seed_everything' else 'model.init_args.' + key}="
        + (json.dumps(value) if isinstance(value, list) else str(value))
        for key, value in VARIANTS[name].items()
    ]


def variant(name: str, *, work: Path, run_dir: Path | None) -> dict:
    """Train (unless ``run_dir`` is given), export and evaluate the config with variant ``name``'s arguments."""
    fit_minutes = None
    if run_dir is None:
        fit_minutes = fit(config=CONFIG, overrides=overrides(name), out=work)
        run_dir = work / "fit" / "version_0"
    student = export(run_dir, run_dir / "checkpoints" / "last.ckpt", work / "student", work / "export.log")
    result = evaluate(
        student,
        out=work,
        tag="eval",
        name=f"dmd2_2step_{name}",
        seeds=[0, 1, 2],
        num_samples=2000,
        eval_steps=STEPS,
    )
    settings = {**DEFAULTS, **VARIANTS[name]}
    return {
        "gan_generator_weight": float(settings["gan_generator_weight"]),
        "generator_lr": float(settings["optimizer.init_args.lr"]),
        "gan_critic_weight": float(settings["gan_critic_weight"]),
        "gan_time_max": float(settings["gan_time_max"]),
        "original_steps": settings["original_steps"],
        "timesteps": timesteps(settings["original_steps"], settings["timesteps"]),
        "start": settings["student.init_args.path"],
        "seed": int(settings["seed_everything"]),
        "fit_minutes": fit_minutes,
        "eval_minutes": round(result["eval_minutes"], 2),
        "rows": result["rows"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "dmd2_2step_sweep.json")
    parser.add_argument(
        "--only", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="variants to run"
    )
    parser.add_argument(
        "--from-run",
        nargs="+",
        default=[],
        metavar="VARIANT=RUN_DIR",
        help="evaluate a finished run of the config with this variant's arguments instead of training it",
    )
    args = parser.parse_args()
    runs = dict(item.split("=", 1) for item in args.from_run)
    unknown = set(runs) - set(args.only)
    if unknown:
        parser.error(f"--from-run names variants not in --only: {sorted(unknown)}")
    result = json.loads(args.out.read_text()) if args.out.is_file() else {"variants": {}}
    shipped = json.loads(SHIPPED.read_text())
    # the rows every variant is compared with, copied from the shipped students' protocol results
    result["shipped"] = {
        "gan_generator_weight": DEFAULTS["gan_generator_weight"],
        "original_steps": DEFAULTS["original_steps"],
        "timesteps": timesteps(DEFAULTS["original_steps"]),
        "start": DEFAULTS["student.init_args.path"],
        "rows": shipped["digits_dmd2_2step"]["rows"],
    }
    result["progressive"] = {"rows": shipped["digits_progressive_2step"]["rows"]}
    for name in args.only:
        with tempfile.TemporaryDirectory() as work:
            run_dir = Path(runs[name]) if name in runs else None
            entry = variant(name, work=Path(work), run_dir=run_dir)
        entry["meta"] = provenance(configs=[CONFIG, "configs/digits/teacher_eval.yaml"])
        entry["trained_by"] = f"distill fit -c {CONFIG} {' '.join(overrides(name))}" + (
            " (a finished run, exported and evaluated here)" if name in runs else ""
        )
        if args.out.is_file():  # another variant may have finished meanwhile (two run at once with --only)
            result["variants"] = {**result["variants"], **json.loads(args.out.read_text())["variants"]}
        result["meta"] = entry["meta"]
        result["variants"][name] = entry
        per_seed = [round(s["fid_real"], 4) for s in entry["rows"][0]["per_seed"]]
        print(f"{name} ({VARIANTS[name]}): FID vs real per seed {per_seed}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
