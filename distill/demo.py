"""`make demo`: the main job on the embedded digits default.

Until knowledge distillation lands this is the best main job that exists: a short run of the digits teacher's
own recipe (configs/digits/teacher.yaml, DiffusionTraining) with a smaller step budget, ending with a summary,
a sample grid and where the TensorBoard logs are.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from distill.cli import DistillCLI

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=600, help="training steps (the full recipe uses 5000)")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="where logs and samples go")
    args = parser.parse_args(argv)
    config = ROOT / "configs" / "digits" / "teacher.yaml"
    print(
        f"distill-diffusion demo: {args.steps} steps of the digits teacher recipe ({config.relative_to(ROOT)})."
    )
    print("Knowledge distillation replaces this job once it lands; the full recipe trains 5000 steps.")
    start = time.perf_counter()
    cli = DistillCLI(
        args=[
            "fit",
            "-c",
            str(config),
            f"--trainer.max_steps={args.steps}",
            f"--trainer.val_check_interval={args.steps}",
            f"--trainer.logger.init_args.save_dir={args.out}",
            "--trainer.logger.init_args.name=teacher",
        ],
    )
    elapsed = time.perf_counter() - start
    model, trainer = cli.model, cli.trainer
    from torchvision.utils import save_image

    from distill.methods.common import balanced_labels

    labels = balanced_labels(40, 10)
    images = model.generate(40, labels=labels, steps=25, guidance_scale=model.sample_guidance, seed=0)
    grid_path = Path(trainer.log_dir) / "samples.png"
    save_image(images.add(1).div(2).clamp(0, 1), grid_path, nrow=10, padding=1, pad_value=1.0)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print()
    print("| what | value |")
    print("| --- | --- |")
    print(f"| training steps | {trainer.global_step} |")
    print(f"| wall time | {elapsed / 60:.1f} min |")
    for key in ("train/loss", "val/loss", "val/loss_ema"):
        if key in metrics:
            print(f"| {key} | {metrics[key]:.4f} |")
    print(f"| sample grid (25 DDIM steps, CFG {model.sample_guidance}) | {grid_path} |")
    print(f"| TensorBoard | tensorboard --logdir {trainer.log_dir} |")
    print(
        f"| checkpoint | {trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path} |"
    )


if __name__ == "__main__":
    main()
