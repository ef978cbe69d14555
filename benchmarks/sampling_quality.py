"""Sampling speed and quality vs cost of the shipped digits teacher and students.

Run:  OMP_NUM_THREADS=2 python benchmarks/sampling_quality.py [--samples 1000] [--repeats 5]
Writes ``benchmarks/results/sampling.{json,md}``, ``benchmarks/results/quality_cost.{json,md}``, the plot
``docs/quality_vs_cost.png`` and the same figure to TensorBoard (``benchmarks/results/tb``).

Speed: CPU wall-clock per image for a batch of 64, the teacher at 50 DDIM steps with classifier-free guidance
(scale 2: two forwards per step, batched) against each shipped student at 1/2/4 steps (one forward per step: the
guidance scale is an input), median of ``--repeats`` after a warm-up, all in one process, alternated; a fast
student is sampled several times per measurement (about a second each); the speed-up is the median of the
per-repeat ratios; beside it the ratio of MACs per image that predicts it.

Quality vs cost: FID vs the real held-out digits (and accuracy) of ``--samples`` images per model with the same
keyed noise and balanced labels (seed 0), against MACs per sample; a cheaper, single-seed version of the
protocol (the README's step-distillation table uses 2,000 x 3 seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import tables
import torch
from figures import save_figure
from paired import paired_ratio

from distill.flops import count_macs, example_inputs
from distill.pipelines import evaluate_model, sample_images
from distill.provenance import provenance
from students.loading import builtin_students_dir
from teachers import DiffusionTeacher

ROOT = Path(__file__).resolve().parent
TEACHER_STEPS = [50, 8, 4, 2, 1]
MIN_TIMING = 1.0  # seconds per timed measurement: fast students are sampled several times in a row


def models() -> dict[str, tuple[DiffusionTeacher, list[int]]]:
    out = {"teacher (DDIM)": (DiffusionTeacher.from_pretrained("builtin:digits"), TEACHER_STEPS)}
    out["consistency student"] = (
        DiffusionTeacher.from_pretrained(builtin_students_dir() / "digits_consistency"),
        [1, 2, 4, 8],
    )
    for k in (1, 2, 4, 8):
        out[f"progressive student ({k}-step)"] = (
            DiffusionTeacher.from_pretrained(builtin_students_dir() / f"digits_progressive_{k}step"),
            [k],
        )
    return out


def macs_per_forward(model: DiffusionTeacher) -> float:
    return float(count_macs(model.unet, example_inputs(model.unet)).total)


def speed(all_models, *, batch: int, repeats: int) -> list[dict]:
    labels = torch.arange(batch) % 10
    idx = torch.arange(batch)
    cases = [("teacher (DDIM)", 50, 2.0)]
    cases += [("consistency student", k, 1.0) for k in (1, 2, 4)]
    cases += [(f"progressive student ({k}-step)", k, 1.0) for k in (1, 2, 4)]
    timings: dict[tuple, list[float]] = {c: [] for c in cases}
    loops: dict[tuple, int] = {}  # fast cases are sampled several times per measurement (about MIN_TIMING s)

    def run(case):
        model = all_models[case[0]][0]
        start = time.perf_counter()
        for _ in range(loops.get(case, 1)):
            with torch.no_grad():
                sample_images(
                    model,
                    labels=labels,
                    seeds=torch.zeros_like(idx),
                    indices=idx,
                    steps=case[1],
                    guidance_scale=case[2],
                )
        return (time.perf_counter() - start) / (batch * loops.get(case, 1))

    for case in cases:  # warm-up, which also sizes each case's loop
        loops[case] = max(1, math.ceil(MIN_TIMING / (run(case) * batch)))
    # alternated: each student timed before and after the teacher, the two averaged, so a drift in the machine's
    # speed during the teacher's long run cancels in the ratio
    for _ in range(repeats):
        before = {case: run(case) for case in cases[1:]}
        timings[cases[0]].append(run(cases[0]))
        for case in cases[1:]:
            timings[case].append((before[case] + run(case)) / 2)
    rows = []
    teacher_model = all_models["teacher (DDIM)"][0]
    teacher_macs = macs_per_forward(teacher_model) * 50 * 2
    for case in cases:
        model = all_models[case[0]][0]
        cfg = 2 if (case[2] != 1.0 and not getattr(model.unet.config, "time_cond_proj_dim", None)) else 1
        macs = macs_per_forward(model) * case[1] * cfg
        ms = statistics.median(timings[case]) * 1000
        rows.append(
            {
                "model": case[0],
                "steps": case[1],
                "guidance": case[2],
                "forwards_per_step": cfg,
                "ms_per_image": ms,
                "macs_per_image": macs,
                # the median of per-repeat ratios (each student timed around the teacher): drift cancels
                "speedup_vs_teacher": paired_ratio(timings[cases[0]], timings[case])[0],
                "speedup_q1_q3": paired_ratio(timings[cases[0]], timings[case])[1],
                "macs_ratio_vs_teacher": teacher_macs / macs,
            }
        )
    return rows


def quality(all_models, *, samples: int) -> list[dict]:
    from distill.metrics import DigitsEvaluator

    evaluator = DigitsEvaluator()
    labels = torch.arange(samples) % 10
    rows = []
    for name, (model, steps_list) in all_models.items():
        per_forward = macs_per_forward(model)
        for steps in steps_list:
            metrics = evaluate_model(model, evaluator, labels=labels, steps=steps, seed=0)
            rows.append(
                {
                    "model": name,
                    "steps": steps,
                    "macs_per_sample": per_forward * steps,
                    "fid_real": float(metrics["fid_real"]),
                    "fid_ref": float(metrics["fid_ref"]),
                    "accuracy": float(metrics["accuracy"]),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def plot(rows: list[dict], png: Path, tb_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = "progressive student" if r["model"].startswith("progressive") else r["model"]
        groups.setdefault(key, []).append(r)
    for name, group in groups.items():
        group = sorted(group, key=lambda r: r["macs_per_sample"])
        ax.plot([r["macs_per_sample"] for r in group], [r["fid_real"] for r in group], "o-", label=name)
        for r in group:
            ax.annotate(
                f"{r['steps']}",
                (r["macs_per_sample"], r["fid_real"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    ax.set_xscale("log")
    ax.set_xlabel("MACs per sample (forward x steps)")
    ax.set_ylabel("FID vs real held-out digits (lower is better)")
    ax.set_title("Digits: quality vs cost (numbers = sampling steps)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, png, tb_dir, "bench/quality_vs_cost")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--png", type=Path, default=ROOT.parent / "docs" / "quality_vs_cost.png")
    args = parser.parse_args()
    torch.manual_seed(0)
    all_models = models()
    args.out.mkdir(parents=True, exist_ok=True)
    speed_rows = speed(all_models, batch=args.batch, repeats=args.repeats)
    meta = {"threads": torch.get_num_threads(), "batch": args.batch, "repeats": args.repeats}
    speed_result = {**meta, "rows": speed_rows, "meta": provenance()}
    (args.out / "sampling.json").write_text(json.dumps(speed_result, indent=2) + "\n")
    print(tables.sampling(speed_result), flush=True)
    q_rows = quality(all_models, samples=args.samples)
    quality_result = {"samples": args.samples, "rows": q_rows, "meta": provenance()}
    (args.out / "quality_cost.json").write_text(json.dumps(quality_result, indent=2) + "\n")
    print(tables.quality_cost(quality_result))
    plot(q_rows, args.png, args.out / "tb")


if __name__ == "__main__":
    main()
