"""`make demo`: consistency distillation (LCM) of the shipped digits teacher into a student with 0.10x its MACs.

The full recipe of ``configs/digits/consistency.yaml`` (500 steps; ``--steps`` shortens it) from the shipped
KD-distilled efficient UNet, then the exported student samples in 4, 2 and 1 steps and the teacher with DDIM in
25 steps (its quality) and 4 steps (what fewer steps cost without distillation), all from the same noise and
labels, scored by the shipped evaluator. Prints the table (MACs per sample, FID vs real digits, FID vs the
teacher's reference, class accuracy) and where the TensorBoard logs, the checkpoint, the exported student and a
sample grid are.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

from distill.console import quiet_third_party
from distill.lightning_cli import DistillCLI
from distill.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "digits" / "consistency.yaml"
FULL_STEPS = 500


def rows_to_run(teacher_steps: int, student_steps: list[int]) -> list[tuple[str, str, int]]:
    """(row name, model role, sampling steps) in table order."""
    rows = [(f"teacher, DDIM {teacher_steps} steps", "teacher", teacher_steps)]
    low = min(4, teacher_steps)
    if low != teacher_steps:
        rows.append((f"teacher, DDIM {low} steps (no distillation)", "teacher", low))
    rows += [(f"student, {n}-step consistency", "student", n) for n in student_steps]
    return rows


def evaluate(models: dict, rows, *, num_samples: int, seed: int = 0) -> dict[str, dict]:
    """Every row from the same per-image noise (seed, index) and balanced labels, scored by the evaluator."""
    from distill.metrics import DigitsEvaluator
    from distill.pipelines import evaluate_model
    from distill.validation import balanced_labels

    evaluator = DigitsEvaluator()
    labels = balanced_labels(num_samples, models["teacher"].num_classes or 10)
    return {
        name: evaluate_model(models[role], evaluator, labels=labels, steps=steps, seed=seed, desc=name)
        for name, role, steps in rows
    }


def grid(models: dict, rows, *, path: Path, per_class: int = 1) -> None:
    """One row of ten digits per table row, same noise and labels (enlarged for viewing, nearest neighbour)."""
    from torchvision.utils import save_image

    from distill.images import viewable_grid
    from distill.pipelines import sample_images

    n = 10 * per_class
    idx = torch.arange(n)
    labels = idx % 10
    images = [
        sample_images(
            models[role],
            labels=labels,
            seeds=torch.full_like(idx, 1),
            indices=idx,
            steps=steps,
            guidance_scale=1.0,
        )
        for _, role, steps in rows
    ]
    save_image(viewable_grid(torch.cat(images).add(1).div(2).clamp(0, 1), nrow=n), path)


def record(
    results: dict[str, dict],
    rows,
    macs: dict[str, float] | None,
    *,
    num_samples: int,
    minutes: dict[str, float],
    argv: list[str],
) -> dict:
    """The demo's result as JSON (``demo.json`` in the run folder): every row's MACs per sample and scores, the
    wall times and where it came from (command, commit, config hash, date, threads)."""
    return {
        "num_samples": num_samples,
        "rows": [
            {
                "label": name,
                "role": role,
                "steps": steps,
                "macs_per_sample": None if macs is None else macs[role] * steps,
                **{k: float(v) for k, v in results[name].items()},
            }
            for name, role, steps in rows
        ],
        "minutes": minutes,
        "threads": torch.get_num_threads(),
        "meta": provenance(
            configs=[CONFIG.relative_to(ROOT)], argv=["distill.demo", *argv], module="distill.demo"
        ),
    }


def table(results: dict[str, dict], rows, macs: dict[str, float] | None, *, num_samples: int) -> str:
    lines = [
        f"| {num_samples} samples each, same noise and labels | MACs / sample | FID vs real digits | "
        "FID vs teacher ref | class accuracy |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, role, steps in rows:
        r = results[name]
        cost = "" if macs is None else f"{macs[role] * steps / 1e6:.0f}M"
        lines.append(
            f"| {name} | {cost} | {r['fid_real']:.3f} | {r['fid_ref']:.3f} | {100 * r['accuracy']:.1f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=FULL_STEPS,
        help=f"training steps (the shipped recipe trains {FULL_STEPS})",
    )
    parser.add_argument("--eval-samples", type=int, default=1000, help="samples per table row")
    parser.add_argument(
        "--teacher-steps", type=int, default=25, help="the teacher's DDIM steps (quality row)"
    )
    parser.add_argument(
        "--student-steps", type=int, nargs="+", default=[4, 2, 1], help="the student's consistency steps"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/demo"), help="where logs, checkpoint, student go"
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    quiet_third_party()
    # The demo hands LightningCLI its own arguments; the ones on its command line are the demo's.
    warnings.filterwarnings(
        "ignore", message=r"LightningCLI's args parameter is intended to run from within Python"
    )
    for name in ("steps", "eval_samples", "teacher_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if min(args.student_steps) < 1:
        parser.error(f"--student-steps must all be >= 1, got {args.student_steps}")
    print(
        f"distill-diffusion demo: consistency distillation ({CONFIG.relative_to(ROOT)}) of the shipped digits "
        f"teacher into a 0.10x-MACs student, {args.steps} steps (the shipped recipe: {FULL_STEPS})."
    )
    start = time.perf_counter()
    cli = DistillCLI(
        args=[
            "fit",
            "-c",
            str(CONFIG),
            f"--trainer.max_steps={args.steps}",
            f"--trainer.val_check_interval={args.steps}",
            f"--trainer.log_every_n_steps={max(1, min(25, args.steps // 20))}",
            f"--trainer.logger.init_args.save_dir={args.out}",
            "--trainer.logger.init_args.name=consistency",
            "--model.init_args.eval_num_samples=0",  # the larger evaluation below replaces it
        ],
    )
    train_minutes = (time.perf_counter() - start) / 60
    model, trainer = cli.model, cli.trainer
    run_dir = Path(trainer.log_dir)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=False)  # the full checkpoint: resumable, as fit writes it
    student_dir = run_dir / "student"
    model.save_pretrained(student_dir)

    from teachers import DiffusionTeacher

    models = {
        "teacher": model.teacher.eval(),
        "student": DiffusionTeacher.from_pretrained(student_dir).eval(),
    }
    flops = next((cb.report for cb in trainer.callbacks if hasattr(cb, "report") and cb.report), None)
    macs = None
    if flops is not None:
        t_macs, s_macs = (net.macs_per_forward for net in flops.networks[:2])
        macs = {"teacher": t_macs, "student": s_macs}
    rows = rows_to_run(args.teacher_steps, args.student_steps)
    print(f"\nEvaluating {len(rows)} settings, {args.eval_samples} samples each")
    results = evaluate(models, rows, num_samples=args.eval_samples)
    if trainer.logger is not None:  # the final numbers in TensorBoard too, at the last step
        trainer.logger.log_metrics(
            {
                f"demo/{role}_{steps}step/{key}": float(value)
                for (name, role, steps) in rows
                for key, value in results[name].items()
                if key != "num_samples"
            },
            step=trainer.global_step,
        )
        trainer.logger.finalize("success")
    grid_path = run_dir / "samples.png"
    grid(models, rows, path=grid_path)
    total_minutes = (time.perf_counter() - start) / 60
    result_path = run_dir / "demo.json"
    result = record(
        results,
        rows,
        macs,
        num_samples=args.eval_samples,
        minutes={"train": train_minutes, "total": total_minutes},
        argv=argv,
    )
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(results, rows, macs, num_samples=args.eval_samples))
    print()
    print(
        f"training: {trainer.global_step} steps in {train_minutes:.1f} min; demo total {total_minutes:.1f} min"
    )
    print(
        "the shipped students and the 3-seed, 2,000-sample protocol: see README (headline) and docs/results.md"
    )
    print(f"TensorBoard:  tensorboard --logdir {run_dir}")
    print(f"checkpoint:   {ckpt}")
    print(f"student:      {student_dir}  (diffusers UNet + LCMScheduler config)")
    print(f"              distill sample --model {student_dir} --steps 4 --out grid.png")
    print(f"samples:      {grid_path}  (one row per table row, top to bottom)")
    print(f"numbers:      {result_path}")


if __name__ == "__main__":
    main()
