"""`make demo`: knowledge distillation of the shipped digits teacher into a student with 43% of its parameters.

A short run of ``configs/digits/kd.yaml`` (the full recipe trains 3,000 steps; the demo 400 by default), then
teacher and EMA student generate from the same noise and labels and the shipped evaluator scores both. Prints a
teacher-vs-student table (parameters, MACs, FID vs real digits, FID vs the teacher's reference, class accuracy)
and where the TensorBoard logs, the checkpoint and the exported student are.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from distill.cli import DistillCLI

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "digits" / "kd.yaml"


def evaluate(model, *, num_samples: int, steps: int, batch_size: int = 500, seed: int = 0) -> dict[str, dict]:
    """Teacher and EMA student, same noise and balanced labels, DDIM ``steps`` (trailing), the shipped evaluator."""
    from tqdm.auto import tqdm

    from distill.methods.common import balanced_labels
    from distill.metrics import DigitsEvaluator
    from distill.sampling import per_sample_noise

    evaluator = model.evaluator or DigitsEvaluator()
    evaluator.kid_subset_size = min(evaluator.kid_subset_size, num_samples)
    teacher = model.teacher
    classes = teacher.num_classes or 1
    labels = balanced_labels(num_samples, classes) if model.null_class is not None else None
    shape = (teacher.in_channels, teacher.sample_size, teacher.sample_size)
    noise = per_sample_noise(
        seeds=torch.full((num_samples,), seed), indices=torch.arange(num_samples), shape=shape
    )
    guidance = model.eval_guidance if model.null_class is not None else None
    results = {}
    model.eval()
    for role in ("teacher", "student"):
        metrics = evaluator.accumulator()
        for start in tqdm(range(0, num_samples, batch_size), desc=f"sampling the {role}", unit="batch"):
            idx = slice(start, min(start + batch_size, num_samples))
            lab = None if labels is None else labels[idx]
            images = model.generate(
                lab, noise[idx], steps=steps, guidance_scale=guidance, teacher=role == "teacher"
            )
            metrics.update(images, lab)
        results[role] = metrics.compute()
    return results


def grid(model, *, steps: int, path: Path, per_class: int = 2) -> None:
    """Teacher rows above student rows, same noise and labels."""
    from torchvision.utils import save_image

    from distill.methods.common import balanced_labels
    from distill.sampling import per_sample_noise

    teacher = model.teacher
    classes = teacher.num_classes or 1
    n = classes * per_class
    labels = balanced_labels(n, classes) if model.null_class is not None else None
    shape = (teacher.in_channels, teacher.sample_size, teacher.sample_size)
    noise = per_sample_noise(seeds=torch.full((n,), 1), indices=torch.arange(n), shape=shape)
    guidance = model.eval_guidance if model.null_class is not None else None
    images = torch.cat(
        [
            model.generate(labels, noise, steps=steps, guidance_scale=guidance, teacher=True),
            model.generate(labels, noise, steps=steps, guidance_scale=guidance),
        ]
    )
    save_image(images.add(1).div(2).clamp(0, 1), path, nrow=classes, padding=1, pad_value=1.0)


def table(model, results: dict[str, dict], flops, *, num_samples: int, steps: int) -> str:
    def params(net) -> int:
        return sum(p.numel() for p in net.parameters())

    t_params, s_params = params(model.teacher.unet), params(model.student)
    rows = [
        ("parameters", f"{t_params / 1e6:.2f}M", f"{s_params / 1e6:.2f}M ({s_params / t_params:.2f}x)"),
    ]
    if flops is not None:
        t_macs, s_macs = (net.macs_per_forward for net in flops.networks[:2])
        rows.append(
            ("MACs per forward", f"{t_macs / 1e6:.1f}M", f"{s_macs / 1e6:.1f}M ({s_macs / t_macs:.2f}x)")
        )
    t, s = results["teacher"], results["student"]
    rows += [
        ("FID vs real digits (lower is better)", f"{t['fid_real']:.3f}", f"{s['fid_real']:.3f}"),
        ("FID vs teacher reference", f"{t['fid_ref']:.3f}", f"{s['fid_ref']:.3f}"),
        ("class accuracy", f"{100 * t['accuracy']:.1f}%", f"{100 * s['accuracy']:.1f}%"),
    ]
    lines = [
        f"| {num_samples} samples each, DDIM {steps} steps, same noise and labels | teacher | student |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {a} | {b} |" for name, a, b in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=400, help="training steps (the full recipe uses 3000)")
    parser.add_argument(
        "--eval-samples", type=int, default=1000, help="samples per model for the final table"
    )
    parser.add_argument("--eval-steps", type=int, default=25, help="DDIM steps for the final table")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/demo"), help="where logs, checkpoint, student go"
    )
    args = parser.parse_args(argv)
    for name in ("steps", "eval_samples", "eval_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    print(
        f"distill-diffusion demo: knowledge distillation ({CONFIG.relative_to(ROOT)}) of the shipped digits "
        f"teacher, {args.steps} steps (the full recipe trains 3000)."
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
            "--trainer.logger.init_args.name=kd",
            "--model.init_args.eval_num_samples=0",  # the larger evaluation below replaces it
        ],
    )
    train_minutes = (time.perf_counter() - start) / 60
    model, trainer = cli.model, cli.trainer
    run_dir = Path(trainer.log_dir)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    student_dir = run_dir / "student"
    model.save_pretrained(student_dir)
    flops = next((cb.report for cb in trainer.callbacks if hasattr(cb, "report") and cb.report), None)
    print(
        f"\nEvaluating teacher and student ({args.eval_samples} samples each, {args.eval_steps} DDIM steps)"
    )
    results = evaluate(model, num_samples=args.eval_samples, steps=args.eval_steps)
    if trainer.logger is not None:  # the final numbers in TensorBoard too, at the last step
        trainer.logger.log_metrics(
            {
                f"demo/{role}/{key}": float(value)
                for role, metrics in results.items()
                for key, value in metrics.items()
                if key != "num_samples"
            },
            step=trainer.global_step,
        )
        trainer.logger.finalize("success")
    grid_path = run_dir / "teacher_top_student_bottom.png"
    grid(model, steps=args.eval_steps, path=grid_path)
    total_minutes = (time.perf_counter() - start) / 60
    print()
    print(table(model, results, flops, num_samples=args.eval_samples, steps=args.eval_steps))
    print()
    print(
        f"training: {trainer.global_step} steps in {train_minutes:.1f} min; demo total {total_minutes:.1f} min"
    )
    print("the full recipe and the 3-seed, 2,000-sample protocol: see README (Results)")
    print(f"TensorBoard:  tensorboard --logdir {run_dir}")
    print(f"checkpoint:   {ckpt}")
    print(f"student:      {student_dir}  (diffusers UNet2DConditionModel + scheduler)")
    print(f"samples:      {grid_path}  (teacher rows above, student rows below)")


if __name__ == "__main__":
    main()
