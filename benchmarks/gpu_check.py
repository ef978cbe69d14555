"""One short GPU session: check the CUDA paths and scout step-distillation settings for the CPU runs.

1. CUDA paths: a bf16-mixed training step of every digits method through the CLI (loss finite), and the
   teacher's vs the students' forward and sampling latency on the GPU (fp32 and bf16 autocast, medians).
2. Scouting: several ``distill fit`` runs side by side on the one GPU, each for a wall-clock budget, with
   validation FID/accuracy read back from their TensorBoard files. The shipped students are trained on CPU from
   their configs; this only picks which settings deserve the CPU time. Processes on one GPU time-slice it: on
   an H100 (2026-11-27), 8 arms beside 3 bf16 runs got about 2.5 steps/s each (tiny networks are bound by
   kernel launches, not arithmetic), so scout with two or three ``--arms`` at a time.

    python benchmarks/gpu_check.py --out OUT [--minutes 6] [--arms a,b,...] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KD_EFFICIENT = "builtin:digits_efficient_kd"
KD_BK_TINY = "runs/digits_students/kd_bk_tiny/student"


def student_yaml(path: str, time_cond: int | None = 64) -> str:
    tc = f", time_cond_proj_dim: {time_cond}" if time_cond else ""
    return (
        "model:\n  init_args:\n    init_from_teacher: false\n    student:\n"
        f"      class_path: students.loading.load_student\n      init_args: {{path: {path}{tc}}}\n"
    )


# name -> (config, extra yaml or None, CLI overrides)
ARMS: dict[str, tuple[str, str | None, list[str]]] = {
    "cd_scratch": ("configs/digits/consistency.yaml", None, []),
    "cd_kd": ("configs/digits/consistency.yaml", student_yaml(KD_EFFICIENT), []),
    "cd_kd_l2": (
        "configs/digits/consistency.yaml",
        student_yaml(KD_EFFICIENT),
        ["--model.init_args.loss=l2"],
    ),
    "cd_kd_lr2e-4": (
        "configs/digits/consistency.yaml",
        student_yaml(KD_EFFICIENT),
        ["--model.init_args.optimizer.init_args.lr=0.0002"],
    ),
    "cd_teacher": ("configs/digits/consistency.yaml", student_yaml("teachers/digits"), []),
    "cd_bktiny_kd": ("configs/digits/consistency.yaml", student_yaml(KD_BK_TINY), []),
    "kd_eff_long": ("configs/digits/kd_efficient.yaml", None, []),
    "pd_kd": (
        "configs/digits/progressive.yaml",
        student_yaml(KD_EFFICIENT),
        ["--model.init_args.round_steps=800"],
    ),
}


def fit_command(config: str, extra: Path | None, overrides: list[str], out: Path, name: str) -> list[str]:
    cmd = [sys.executable, "-m", "distill.cli", "fit", "-c", config]
    if extra is not None:
        cmd += ["-c", str(extra)]
    return [
        *cmd,
        *overrides,
        f"--trainer.logger.init_args.save_dir={out}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.logger.init_args.version=0",
        "--trainer.enable_progress_bar=false",
    ]


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def bf16_commands(out: Path, accelerator: str) -> dict[str, list[str]]:
    """A few bf16-mixed steps (and one validation) of each method through the CLI."""
    commands = {}
    for name, config in (
        ("kd", "configs/digits/kd_efficient.yaml"),
        ("consistency", "configs/digits/consistency.yaml"),
        ("progressive", "configs/digits/progressive.yaml"),
    ):
        cmd = [
            *fit_command(config, None, [], out, f"bf16_{name}"),
            "--trainer.precision=bf16-mixed",
            "--trainer.max_steps=28",
            "--trainer.log_every_n_steps=5",
            "--trainer.val_check_interval=28",
            "--model.init_args.eval_num_samples=100",
            f"--trainer.accelerator={accelerator}",
            "--trainer.callbacks=[]",
        ]
        if name == "progressive":
            cmd += ["--model.init_args.round_steps=4"]
        commands[f"bf16_{name}"] = cmd

    return commands


def latency(device: str) -> dict:
    import torch

    from students.efficient import efficient_unet_digits
    from teachers import DiffusionTeacher

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    teacher = DiffusionTeacher.from_pretrained("builtin:digits").to(device).eval()
    nets = {
        "teacher": teacher.unet,
        "efficient (0.10x)": efficient_unet_digits(teacher="builtin:digits").to(device).eval(),
    }
    rows = {}
    for batch in (1, 256):
        x = torch.randn(batch, 1, 16, 16, device=device)
        t = torch.full((batch,), 500, device=device)
        labels = torch.arange(batch, device=device) % 10
        for name, net in nets.items():
            for dtype in ("fp32", "bf16"):
                times = []
                with torch.no_grad(), torch.autocast(device, torch.bfloat16, enabled=dtype == "bf16"):
                    for i in range(60 if device == "cuda" else 12):
                        sync()
                        start = time.perf_counter()
                        net(x, t, encoder_hidden_states=None, class_labels=labels)
                        sync()
                        if i >= 10:
                            times.append(time.perf_counter() - start)
                rows[f"{name} batch {batch} {dtype}"] = statistics.median(times) * 1e3
    return {"forward_ms_median": rows}


def scout(
    out: Path,
    arms: list[str],
    minutes: float,
    val_every: int,
    accelerator: str,
    eval_samples: int,
    bf16: bool,
) -> dict:
    procs = {}
    for name in arms:
        config, extra, overrides = ARMS[name]
        extra_path = None
        if extra is not None:
            extra_path = out / f"{name}.yaml"
            extra_path.write_text(extra)
        cmd = [
            *fit_command(config, extra_path, overrides, out, name),
            f"--trainer.accelerator={accelerator}",
            f"--model.init_args.eval_num_samples={eval_samples}",
            "--trainer.max_steps=40000",
            f"--trainer.max_time=00:00:{int(minutes):02d}:{int(minutes % 1 * 60):02d}",
            f"--trainer.val_check_interval={val_every}",
        ]
        if name.startswith("pd"):
            cmd += ["--trainer.max_steps=5600"]
        log = (out / f"{name}.log").open("w")
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log)
    if bf16:
        for name, cmd in bf16_commands(out, accelerator).items():
            log = (out / f"{name}.log").open("w")
            procs[name] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log)
    for proc, log in procs.values():
        proc.wait()
        log.close()
    result = {}
    for name, (proc, _) in procs.items():
        run_dir = out / name / "version_0"
        scalars = read_scalars(run_dir) if run_dir.exists() else {}
        result[name] = {
            "returncode": proc.returncode,
            "steps": max((s for rows in scalars.values() for s, _ in rows), default=0),
            "val": {k: v for k, v in scalars.items() if k.startswith("val/")},
            "loss_last": {k: v[-1] for k, v in scalars.items() if k.startswith("train/")},
            "losses_finite": all(
                math.isfinite(v) for k, rows in scalars.items() if k.startswith("train/") for _, v in rows
            ),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--val-every", type=int, default=1000)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--skip-cuda", action="store_true")
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--eval-samples", type=int, default=500)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    report: dict = {}
    if not args.skip_cuda:
        try:
            report["latency"] = latency("cuda" if args.accelerator == "gpu" else "cpu")
        except Exception as error:  # keep going: the scouting runs are independent of it
            report["latency"] = {"error": repr(error)}
        print(json.dumps(report["latency"], indent=1), flush=True)
    report["scout"] = scout(
        args.out,
        [a for a in args.arms.split(",") if a],
        args.minutes,
        args.val_every,
        args.accelerator,
        args.eval_samples,
        not args.skip_cuda,
    )
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    for name, row in report["scout"].items():
        finals = {
            k.removeprefix("val/"): round(v[-1][1], 3)
            for k, v in row["val"].items()
            if "fid_real" in k or "accuracy" in k
        }
        print(name, row["returncode"], row["steps"], finals, flush=True)


if __name__ == "__main__":
    main()
