"""The two-step DMD2 digits student in other settings: configs/digits/dmd2_2step.yaml (9,000 batches) with
some of its arguments overridden (``VARIANTS``: the generator's GAN weight and lr, the critic's GAN weight and noise
range, the distribution-matching gradient's noise range, the generator's start and lr schedule, DMD's regression
loss, the fake score's start, the second step's time: ``original_steps`` picks LCM's grid, 50 -> 999, 499 as
shipped, 5 -> 999, 599, or custom ``timesteps`` on the grid of 50, e.g. 999, 299; and the training seed), each
student exported (EMA) and evaluated by the protocol (configs/digits/teacher_eval.yaml: 2,000 samples x seeds 0/1/2, 2
steps), beside the shipped student (the config's settings: GAN weights 0.3 / 0.3 on inputs noised up to a quarter of
the training times, times 999, 499) and the progressive two-step student it has to beat on every seed.

Run:  OMP_NUM_THREADS=1 python benchmarks/dmd2_2step_sweep.py   (one full run of the config per variant, its
      header gives the cost; run two at once with --only)
      ... --only 0.3-t599 --from-run 0.3-t599=RUN_DIR   (export and evaluate a finished ``distill fit`` run of the
      variant instead of training it; RUN_DIR holds config.yaml and checkpoints/last.ckpt)
      ... --only 0.1 --from-student 0.1=DIR   (evaluate an exported student of the variant)
      ... --average-only 0.3-gt0.25=RUN_DIR   (add the mean of that finished run's last four checkpoints to the
      variant's recorded entry)
      ... --merge 0.3-gt0.25=RUN_DIR 0.3-gt0.25-seed1=RUN_DIR ...   (the mean of several training seeds' runs of one
      setting, a model soup: their last checkpoints, and the last four of each; recorded under ``merged``)
Where the run folder is at hand (trained here or ``--from-run``) the student whose weights are the mean of the last
four checkpoints' EMA weights (batches 4,500 to 9,000 in a run of the config's length; ``distill export --average``)
is evaluated too.
Writes ``benchmarks/results/dmd2_2step_sweep.json`` (docs/distribution_matching.md's sweep table is generated from
it by ``python benchmarks/update_docs.py``); entries for variants not run are kept.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from digits_runs import evaluate, export, fit

from distill.provenance import provenance
from teachers.schedule import NoiseSchedule

ROOT = Path(__file__).resolve().parent
CONFIG = "configs/digits/dmd2_2step.yaml"
SHIPPED = ROOT / "results" / "shipped_students.json"
SCHEDULER = ROOT.parent / "students" / "weights" / "digits_dmd2_2step" / "scheduler" / "scheduler_config.json"
# the config's values of what the variants override
DEFAULTS = {
    "gan_generator_weight": 0.3,
    "original_steps": 50,
    "timesteps": None,
    "optimizer.init_args.lr": 5e-5,
    "gan_critic_weight": 0.3,
    "gan_time_max": 0.25,
    "student.init_args.path": "builtin:digits_dmd2_1step",
    "seed_everything": 0,
    "lr_scheduler.class_path": None,
    "regression_weight": 0.0,
    "regression_batch_size": None,
    "fake_score": "builtin:digits_efficient_kd_long",  # the fake score's start (None: a copy of the teacher)
    "update_ratio": 5,
    "trainer.max_steps": 9000,
    "dm_time_min": 0.02,
}
COSINE = {  # the generator's lr annealed to 0 along its 1,500 updates (the scheduler steps per generator update)
    "lr_scheduler.class_path": "torch.optim.lr_scheduler.CosineAnnealingLR",
    "lr_scheduler.init_args.T_max": 1500,
}
REGRESSION = {"regression_batch_size": 16}  # of the batch of 64 (25 teacher forwards per pair)
# name -> the arguments overridden. Until the config took "0.3-gt0.25"'s settings its GAN weight was 0.1 and its
# noise range 0.5 (variant "0.1", the student shipped before); the variants run then are written against today's
# config. "0.3-more" is a longer run: 9,000 more batches from the two-step student shipped then, "0.1" (its critic
# and fake score start afresh from the config's networks).
HALF = {"gan_time_max": 0.5}
RATIO10 = {"update_ratio": 10, "trainer.max_steps": 16500}
VARIANTS = {
    "0.1": {"gan_generator_weight": 0.1, **HALF},
    "0.3": {"gan_generator_weight": 0.3, **HALF},
    "1.0": {"gan_generator_weight": 1.0, **HALF},
    "0.3-t599": {"gan_generator_weight": 0.3, "original_steps": 5, **HALF},
    "0.3-more": {"gan_generator_weight": 0.3, "student.init_args.path": "builtin:digits_dmd2_2step", **HALF},
    "0.3-t299": {"gan_generator_weight": 0.3, "timesteps": [999, 299], **HALF},
    "0.3-t199": {"gan_generator_weight": 0.3, "timesteps": [999, 199], **HALF},
    "0.3-lr2.5e-5": {"gan_generator_weight": 0.3, "optimizer.init_args.lr": 2.5e-5, **HALF},
    "0.3-lr1.25e-5": {"gan_generator_weight": 0.3, "optimizer.init_args.lr": 1.25e-5, **HALF},
    "0.3-critic1": {"gan_generator_weight": 0.3, "gan_critic_weight": 1.0, **HALF},
    "0.3-gt0.25": {"gan_generator_weight": 0.3, "gan_time_max": 0.25},  # the config's own settings since then
    "0.3-gt0.1": {"gan_generator_weight": 0.3, "gan_time_max": 0.1},
    "0.3-gt0.25-critic1": {"gan_generator_weight": 0.3, "gan_time_max": 0.25, "gan_critic_weight": 1.0},
    # the same run with other training seeds: how far two runs of one config differ
    "0.3-gt0.25-seed1": {"gan_generator_weight": 0.3, "gan_time_max": 0.25, "seed_everything": 1},
    "0.3-gt0.25-seed2": {"gan_generator_weight": 0.3, "gan_time_max": 0.25, "seed_everything": 2},
    # the generator starting from the progressive two-step student (the bar itself; the same network and times,
    # sampled by DDIM rather than re-noised), at the config's lr and at half of it
    "0.3-gt0.25-prog2": {"gan_time_max": 0.25, "student.init_args.path": "builtin:digits_progressive_2step"},
    "0.3-gt0.25-prog2-lr2.5e-5": {
        "gan_time_max": 0.25,
        "student.init_args.path": "builtin:digits_progressive_2step",
        "optimizer.init_args.lr": 2.5e-5,
    },
    # the generator's lr annealed to 0 (cosine) instead of constant, at two training seeds: does a settled end
    # narrow the spread between seeds?
    "0.3-gt0.25-cos": {"gan_time_max": 0.25, **COSINE},
    "0.3-gt0.25-cos-seed1": {"gan_time_max": 0.25, "seed_everything": 1, **COSINE},
    "0.3-gt0.25-cos-seed2": {"gan_time_max": 0.25, "seed_everything": 2, **COSINE},
    # annealed from twice the peak lr
    "0.3-gt0.25-cos-lr1e-4": {"gan_time_max": 0.25, "optimizer.init_args.lr": 1e-4, **COSINE},
    # DMD's regression loss: the generator's first step pulled towards the teacher's 25-step sample from the same
    # noise (a quarter of each batch, the teacher's sampler being the cost), at two weights: does following the
    # teacher's noise-to-image map help?
    "0.3-gt0.25-reg0.25": {"gan_time_max": 0.25, **REGRESSION, "regression_weight": 0.25},
    "0.3-gt0.25-reg1": {"gan_time_max": 0.25, **REGRESSION, "regression_weight": 1.0},
    # the fake score copied from the teacher (DMD2's own start) rather than the KD network: no approximation error
    # in the critic's start, and the GAN head reads the teacher's bottleneck
    "0.3-gt0.25-fsteacher": {"gan_time_max": 0.25, "fake_score": None},
    "0.3-gt0.25-fsteacher-seed1": {"gan_time_max": 0.25, "fake_score": None, "seed_everything": 1},
    # 10 critic updates per generator update rather than DMD2's 5 (the fake score tracks the generator closer), the
    # generator's 1,500 updates kept: 16,500 batches
    "0.3-gt0.25-ratio10": {"gan_time_max": 0.25, **RATIO10},
    "0.3-gt0.25-ratio10-seed1": {"gan_time_max": 0.25, **RATIO10, "seed_everything": 1},
    # the GAN term is what moves a student past its teacher on the real digits: the generator's weight 1 with the
    # critic on the quarter noise range (at the half range it measured worse than 0.3), training seeds 0 and 1
    "1.0-gt0.25": {"gan_generator_weight": 1.0, "gan_time_max": 0.25},
    "1.0-gt0.25-seed1": {"gan_generator_weight": 1.0, "gan_time_max": 0.25, "seed_everything": 1},
    # the distribution-matching gradient only above a quarter / half of the training times, so that below them
    # (where the critic reads inputs noised up to a quarter) the GAN's pull towards the real digits acts alone
    "0.3-gt0.25-dm0.25": {"gan_time_max": 0.25, "dm_time_min": 0.25},
    "0.3-gt0.25-dm0.5": {"gan_time_max": 0.25, "dm_time_min": 0.5},
    "0.3-gt0.25-dm0.25-seed1": {"gan_time_max": 0.25, "dm_time_min": 0.25, "seed_everything": 1},
    "0.3-gt0.25-dm0.25-seed2": {"gan_time_max": 0.25, "dm_time_min": 0.25, "seed_everything": 2},
}
STEPS = [2]
# the config keeps a checkpoint every 1,500 batches; besides the last one's EMA student, the mean of the last four's
# (``distill export --average``; batches 4,500 to 9,000 in a run of the config's length) is evaluated wherever the
# run folder is at hand
CHECKPOINT_EVERY = 1500


def checkpoint_at(run_dir: Path, step: int) -> Path:
    """The run's checkpoint written at batch ``step`` (Lightning names it ``epoch=E-step=S.ckpt``)."""
    found = sorted((run_dir / "checkpoints").glob(f"epoch=*-step={step}.ckpt"))
    if len(found) != 1:
        raise SystemExit(
            f"{run_dir / 'checkpoints'} holds {len(found)} checkpoints of step {step}, expected one"
        )
    return found[0]


def timesteps(original_steps: int, custom: list[int] | None = None, num_steps: int = 2) -> list[int]:
    """The generator's sampling times: ``custom`` when given, else LCM's on the ``original_steps`` grid (what its
    exported LCMScheduler uses)."""
    if custom is not None:
        return list(custom)
    schedule = NoiseSchedule.from_scheduler_config(json.loads(SCHEDULER.read_text()))
    return [int(t) for t in schedule.consistency_grid(num_steps, original_steps=original_steps)]


def top_level(key: str) -> bool:
    """Whether an overridden argument is the run's (the training seed, the trainer's) rather than the method's."""
    return key == "seed_everything" or key.startswith("trainer.")


def overrides(name: str) -> list[str]:
    """The ``distill fit`` arguments of variant ``name`` (the training seed and the trainer's are top level, the rest
    method arguments; ``fake_score`` is the path of the student it loads, None for the teacher's copy)."""
    found = []
    for key, value in VARIANTS[name].items():
        if key == "fake_score":
            key = "fake_score" if value is None else "fake_score.init_args.path"
        found.append(
            f"--{key if top_level(key) else 'model.init_args.' + key}="
            + (json.dumps(value) if isinstance(value, list) or value is None else str(value))
        )
    return found


def settings(overridden: dict) -> dict:
    """What the sweep table shows of a run of the config with ``overridden`` arguments."""
    merged = {**DEFAULTS, **overridden}
    return {
        "gan_generator_weight": float(merged["gan_generator_weight"]),
        "generator_lr": float(merged["optimizer.init_args.lr"]),
        "gan_critic_weight": float(merged["gan_critic_weight"]),
        "gan_time_max": float(merged["gan_time_max"]),
        "original_steps": merged["original_steps"],
        "timesteps": timesteps(merged["original_steps"], merged["timesteps"]),
        "start": merged["student.init_args.path"],
        "seed": int(merged["seed_everything"]),
        "generator_lr_schedule": "constant" if merged["lr_scheduler.class_path"] is None else "cosine",
        "regression_weight": float(merged["regression_weight"]),
        "regression_batch_size": merged["regression_batch_size"],
        "fake_score": merged["fake_score"] or "teacher",
        "update_ratio": int(merged["update_ratio"]),
        "batches": int(merged["trainer.max_steps"]),
        "dm_time_min": float(merged["dm_time_min"]),
    }


def protocol(student: Path, *, work: Path, tag: str, name: str) -> dict:
    """The protocol (2,000 samples x seeds 0/1/2) on an exported student at the sweep's step count."""
    return evaluate(
        student, out=work, tag=tag, name=name, seeds=[0, 1, 2], num_samples=2000, eval_steps=STEPS
    )


def variant(name: str, *, work: Path, run_dir: Path | None = None, student: Path | None = None) -> dict:
    """Train (unless a finished ``run_dir`` or an exported ``student`` is given), export and evaluate the config with
    variant ``name``'s arguments."""
    fit_minutes = None
    if student is None:
        if run_dir is None:
            fit_minutes = fit(config=CONFIG, overrides=overrides(name), out=work)
            run_dir = work / "fit" / "version_0"
        student = export(
            run_dir, run_dir / "checkpoints" / "last.ckpt", work / "student", work / "export.log"
        )
    result = protocol(student, work=work, tag="eval", name=f"dmd2_2step_{name}")
    entry = {
        **settings(VARIANTS[name]),
        "fit_minutes": fit_minutes,
        "eval_minutes": round(result["eval_minutes"], 2),
        "rows": result["rows"],
    }
    if run_dir is not None:
        entry["averaged"] = averaged(name, run_dir=run_dir, work=work)
    return entry


def last_four(run_dir: Path) -> tuple[list[Path], list[int]]:
    """The run's last four checkpoints (``last.ckpt`` last) and the batches they were written at."""
    last = run_dir / "checkpoints" / "last.ckpt"
    # one optimizer step per batch: the last checkpoint's global step is the run's batches
    end = int(torch.load(last, map_location="cpu", weights_only=True)["global_step"])
    steps = [end - k * CHECKPOINT_EVERY for k in (3, 2, 1)]
    return [*(checkpoint_at(run_dir, step) for step in steps), last], [*steps, end]


def averaged(name: str, *, run_dir: Path, work: Path) -> dict:
    """Export the mean of the run's last four checkpoints' EMA weights and evaluate it by the protocol."""
    paths, steps = last_four(run_dir)
    student = export(
        run_dir, paths[-1], work / "student_averaged", work / "export_averaged.log", average=paths[:-1]
    )
    result = protocol(student, work=work, tag="eval_averaged", name=f"dmd2_2step_{name}_averaged")
    return {"steps": steps, "rows": result["rows"]}


def differences(name: str, config: Path) -> dict[str, tuple]:
    """The arguments the variant sets (the config's where it does not) that the run's saved config has otherwise:
    ``{key: (variant's, run's)}``."""
    import yaml

    saved = yaml.safe_load(config.read_text())
    found = {}
    for key, value in {**DEFAULTS, **VARIANTS[name]}.items():
        node = saved if top_level(key) else saved["model"]["init_args"]
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if key == "fake_score" and isinstance(node, dict):  # a loaded student: its path
            node = node.get("init_args", {}).get("path")
        if node != value:
            found[key] = (value, node)
    return found


def add_averages(out: Path, runs: dict[str, str], parser: argparse.ArgumentParser) -> None:
    """Attach ``averaged`` (with its own provenance and command) to recorded variants, from their run folders."""
    recorded = json.loads(out.read_text())["variants"] if out.is_file() else {}
    missing = sorted(set(runs) - set(recorded))
    if missing:
        parser.error(f"--average-only names variants with no recorded entry in {out}: {missing}")
    for name, run_dir in runs.items():
        differ = differences(name, Path(run_dir) / "config.yaml")
        if differ:
            parser.error(f"{run_dir}/config.yaml is not a run of variant {name}: {differ}")
        with tempfile.TemporaryDirectory() as work:
            entry = averaged(name, run_dir=Path(run_dir), work=Path(work))
        entry["meta"] = provenance(configs=[CONFIG, "configs/digits/teacher_eval.yaml"])
        entry["made_by"] = f"python benchmarks/dmd2_2step_sweep.py --average-only {name}=RUN_DIR"
        result = json.loads(out.read_text())  # re-read: another process may have written meanwhile
        result["variants"][name]["averaged"] = entry
        result["meta"] = entry["meta"]
        out.write_text(json.dumps(result, indent=2) + "\n")
        per_seed = [round(s["fid_real"], 4) for s in entry["rows"][0]["per_seed"]]
        print(f"{name}: mean of the last four checkpoints, FID vs real per seed {per_seed}", flush=True)


def merge(out: Path, runs: dict[str, str], parser: argparse.ArgumentParser) -> None:
    """Record under ``merged`` the uniform mean of several training seeds' runs of one setting (a model soup): the
    runs' last checkpoints' EMA weights, and the last four checkpoints of each, each evaluated by the protocol."""
    recorded = json.loads(out.read_text())["variants"] if out.is_file() else {}
    missing = sorted(set(runs) - set(recorded))
    if missing:
        parser.error(f"--merge names variants with no recorded entry in {out}: {missing}")
    if len(runs) < 2:
        parser.error("--merge averages two or more runs: name each as VARIANT=RUN_DIR")
    setting = {name: settings(VARIANTS[name]) for name in runs}
    seeds = [setting[name].pop("seed") for name in runs]
    first = next(iter(runs))
    unlike = sorted(name for name in runs if setting[name] != setting[first])
    if unlike or len(set(seeds)) != len(seeds):
        parser.error(
            f"--merge averages runs of one setting at different training seeds: {unlike or first} "
            f"{'differ from ' + first + ' in more than the seed' if unlike else 'repeat a seed'} (seeds {seeds})"
        )
    for name, run_dir in runs.items():
        differ = differences(name, Path(run_dir) / "config.yaml")
        if differ:
            parser.error(f"{run_dir}/config.yaml is not a run of variant {name}: {differ}")
    checkpoints = {name: last_four(Path(run_dir))[0] for name, run_dir in runs.items()}
    entry = {**setting[first], "seeds": seeds, "variants": list(runs)}
    with tempfile.TemporaryDirectory() as work:
        for way, picked in (
            ("last", [c[-1:] for c in checkpoints.values()]),
            ("last4", list(checkpoints.values())),
        ):
            paths = [path for chosen in picked for path in chosen]
            student = export(
                Path(runs[first]),
                paths[0],
                Path(work) / f"student_{way}",
                Path(work) / f"export_{way}.log",
                average=paths[1:],
            )
            result = protocol(student, work=Path(work), tag=f"eval_{way}", name=f"dmd2_2step_merged_{way}")
            entry[way] = {"checkpoints": len(paths), "rows": result["rows"]}
            per_seed = [round(s["fid_real"], 4) for s in result["rows"][0]["per_seed"]]
            print(
                f"mean of {len(paths)} checkpoints of {list(runs)}: FID vs real per seed {per_seed}",
                flush=True,
            )
    entry["meta"] = provenance(configs=[CONFIG, "configs/digits/teacher_eval.yaml"])
    entry["made_by"] = "python benchmarks/dmd2_2step_sweep.py --merge " + " ".join(
        f"{n}=RUN_DIR" for n in runs
    )
    result = json.loads(out.read_text())  # re-read: another process may have written meanwhile
    result.setdefault("merged", {})[" + ".join(runs)] = entry
    result["meta"] = entry["meta"]
    out.write_text(json.dumps(result, indent=2) + "\n")


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
    parser.add_argument(
        "--from-student",
        nargs="+",
        default=[],
        metavar="VARIANT=DIR",
        help="evaluate an exported student (a diffusers folder) trained with this variant's arguments",
    )
    parser.add_argument(
        "--average-only",
        nargs="+",
        default=[],
        metavar="VARIANT=RUN_DIR",
        help="add the averaged student of a finished run to the variant's recorded entry (the rest is kept)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        default=[],
        metavar="VARIANT=RUN_DIR",
        help="record the mean of these finished runs' weights (one setting, different training seeds)",
    )
    args = parser.parse_args()
    if args.merge:
        merge(args.out, dict(item.split("=", 1) for item in args.merge), parser)
        return
    if args.average_only:
        add_averages(args.out, dict(item.split("=", 1) for item in args.average_only), parser)
        return
    runs = dict(item.split("=", 1) for item in args.from_run)
    students = dict(item.split("=", 1) for item in args.from_student)
    for flag, named in (("--from-run", runs), ("--from-student", students)):
        unknown = set(named) - set(args.only)
        if unknown:
            parser.error(f"{flag} names variants not in --only: {sorted(unknown)}")
    if set(runs) & set(students):
        parser.error(f"--from-run and --from-student both name {sorted(set(runs) & set(students))}")
    result = json.loads(args.out.read_text()) if args.out.is_file() else {"variants": {}}
    shipped = json.loads(SHIPPED.read_text())
    # the rows every variant is compared with, copied from the shipped students' protocol results
    result["shipped"] = {**settings({}), "rows": shipped["digits_dmd2_2step"]["rows"]}
    result["progressive"] = {"rows": shipped["digits_progressive_2step"]["rows"]}
    for name in args.only:
        with tempfile.TemporaryDirectory() as work:
            run_dir = Path(runs[name]) if name in runs else None
            student = Path(students[name]) if name in students else None
            entry = variant(name, work=Path(work), run_dir=run_dir, student=student)
        entry["meta"] = provenance(configs=[CONFIG, "configs/digits/teacher_eval.yaml"])
        entry["trained_by"] = f"distill fit -c {CONFIG} {' '.join(overrides(name))}" + (
            " (a finished run, exported and evaluated here)"
            if name in runs
            else " (its exported student, evaluated here)"
            if name in students
            else ""
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
