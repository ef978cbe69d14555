"""Training speed features on this machine: one knowledge-distillation step (digits teacher -> efficient UNet,
batch 64) in fp32, with bf16 autocast (``precision: bf16-mixed``), with a channels-last student
(``channels_last: true``) and with a compiled student (``compile_student: true``).

Run:  OMP_NUM_THREADS=2 python benchmarks/speed_features.py [--steps 8]
Writes ``benchmarks/results/speed_features.{json,md}``. Each variant is its own KnowledgeDistillation module
(the method's ``training_losses``, AdamW, the EMA update: what a Trainer step runs, whose own overhead
``overhead.py`` measures), and the variants take turns step by step, so drift in the machine's speed hits all
alike; after the warm-up (compilation is paid there and reported separately), the speed-up of a variant is the
median over steps of (fp32 step / that variant's step in the same turn). bf16 autocast wraps the forward
passes and the loss as Lightning's ``bf16-mixed`` does; the backward pass runs outside it.

On a GPU the same flags apply: ``--trainer.precision=bf16-mixed``, ``--model.init_args.channels_last=true``,
``--model.init_args.compile_student=true``; with a teacher ``dtype: bfloat16`` and ``gradient_checkpointing``
for memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import tables
import torch
from overhead import endless, loader
from paired import paired_ratio

from distill.provenance import provenance
from distill.rng import GeneratorRandom

ROOT = Path(__file__).resolve().parent
VARIANTS = {
    "fp32": ({}, False),
    "bf16 autocast": ({}, True),
    "channels_last student": ({"channels_last": True}, False),
    "compiled student": ({"compile_student": True}, False),
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


def step_fn(module, *, bf16: bool):
    """One training step of ``module`` as its Trainer would run it (fit-start hook, autocast, AdamW, EMA)."""
    module.configure_model()  # compiles the student when asked; modes stay as built (teacher and EMA in eval)
    opt = torch.optim.AdamW(module.trainable_parameters(), lr=2e-4)

    def step(images, labels):
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = module.training_losses((images, labels), rng=GeneratorRandom(None))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        module.after_step(steps_done=1)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant (variants take turns)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    steps = {name: step_fn(build(options), bf16=bf16) for name, (options, bf16) in VARIANTS.items()}
    batches = endless(loader())
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    first: dict[str, float] = {}
    for i in range(args.warmup + args.steps):
        images, labels = next(batches)
        for name, step in steps.items():  # every variant on the same batch, one after the other
            start = time.perf_counter()
            step(images, labels)
            elapsed = time.perf_counter() - start
            first.setdefault(name, elapsed)
            if i >= args.warmup:
                times[name].append(elapsed)
    rows = [
        {
            "variant": name,
            "step_ms": 1000 * statistics.median(t),
            "speedup_vs_fp32": paired_ratio(times["fp32"], t)[0],
            "speedup_q1_q3": paired_ratio(times["fp32"], t)[1],
            "first_step_s": first[name],
        }
        for name, t in times.items()
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"threads": torch.get_num_threads(), "steps": args.steps, "rows": rows, "meta": provenance()}
    (args.out / "speed_features.json").write_text(json.dumps(result, indent=2) + "\n")
    print(tables.speed_features(result))


if __name__ == "__main__":
    main()
