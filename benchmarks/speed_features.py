"""Training speed features on this machine: one knowledge-distillation step (digits teacher -> efficient UNet,
batch 64, inside Lightning's Trainer) in fp32, with bf16 autocast (``precision: bf16-mixed``), with a channels-last
student (``channels_last: true``) and with a compiled student (``compile_student: true``).

Run:  OMP_NUM_THREADS=2 python benchmarks/speed_features.py [--steps 15]
Writes ``benchmarks/results/speed_features.{json,md}``. Each variant is timed after its warm-up (compilation
excluded, and reported separately); variants alternate in short rounds (so drift in the machine's speed
hits all alike); medians. On a GPU the same flags apply:
``--trainer.precision=bf16-mixed``, ``--model.init_args.channels_last=true``,
``--model.init_args.compile_student=true``; with a teacher ``dtype: bfloat16`` and ``gradient_checkpointing``
for memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from overhead import timed_fit

ROOT = Path(__file__).resolve().parent
VARIANTS = {
    "fp32": ({}, "32-true"),
    "bf16 autocast": ({}, "bf16-mixed"),
    "channels_last student": ({"channels_last": True}, "32-true"),
    "compiled student": ({"compile_student": True}, "32-true"),
}


def build(options: dict):
    from distill.methods.knowledge import KnowledgeDistillation
    from students.efficient import efficient_unet_digits
    from teachers import DiffusionTeacher

    torch.manual_seed(0)
    teacher = DiffusionTeacher.from_pretrained("builtin:digits")
    return KnowledgeDistillation(
        teacher,
        efficient_unet_digits(teacher="builtin:digits"),
        evaluator=None,
        samples_per_class=0,
        **options,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    modules = {name: build(options) for name, (options, _) in VARIANTS.items()}
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    first: dict[str, float] = {}
    for round_ in range(args.rounds):
        for name, (_, precision) in VARIANTS.items():
            # the first round pays the warm-up (and compilation); later ones one step for the new Trainer
            warmup = args.warmup if round_ == 0 else 1
            t, f = timed_fit(modules[name], args.steps, warmup, precision=precision)
            times[name] += t
            first.setdefault(name, f)
    base = statistics.median(times["fp32"])
    rows = [
        {
            "variant": name,
            "step_ms": 1000 * statistics.median(t),
            "speedup_vs_fp32": base / statistics.median(t),
            "first_step_s": first[name],
        }
        for name, t in times.items()
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed_features.json").write_text(
        json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2) + "\n"
    )
    lines = [
        "| KD step, batch 64, CPU | step (ms) | vs fp32 | first step incl. set-up (s) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['step_ms']:.0f} | {r['speedup_vs_fp32']:.2f}x | {r['first_step_s']:.1f} |"
        )
    (args.out / "speed_features.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
