"""Scaling: training-step time and memory of the digits teacher and its efficient student against batch size and
image size (16, 32, 64 px).

Run:  OMP_NUM_THREADS=2 python benchmarks/scaling.py [--repeats 5]
Writes ``benchmarks/results/scaling.{json,md}``.

One step = forward, MSE loss, backward and an AdamW step of the network alone (what a student costs to train; the
teacher's row is what training it cost), on random data, median of ``--repeats`` after two warm-ups (fast
configurations time several steps per measurement, about a second each), teacher and student alternated; the
time ratio is the median of the per-repeat ratios. Memory: the bytes autograd saves for the backward pass
(activations, counted exactly with ``saved_tensors_hooks``), plus weights, gradients and AdamW moments (16 bytes
per parameter). Both UNets are convolutional, so they run at any size that the down-sampling divides.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent
MIN_TIMING = 1.0  # seconds per timed measurement: fast configurations run several steps per measurement


def networks():
    from students.efficient import efficient_unet_digits
    from teachers import DiffusionTeacher

    torch.manual_seed(0)
    teacher = DiffusionTeacher.from_pretrained("builtin:digits").unet
    teacher = teacher.train().requires_grad_(True)
    return {"teacher": teacher, "student": efficient_unet_digits(teacher="builtin:digits")}


def step_fn(net):
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step(x, t, y):
        out = net(x, t, encoder_hidden_states=None, class_labels=y).sample
        loss = F.mse_loss(out, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def saved_bytes(net, x, t, y) -> int:
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t_: t_):
        out = net(x, t, encoder_hidden_states=None, class_labels=y).sample
    out.sum().backward()
    net.zero_grad(set_to_none=True)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    nets = networks()
    steps = {name: step_fn(net) for name, net in nets.items()}
    rows = []
    for size in args.sizes:
        for batch in args.batches:
            x = torch.randn(batch, 1, size, size)
            t = torch.randint(0, 1000, (batch,))
            y = torch.arange(batch) % 10
            timings: dict[str, list[float]] = {name: [] for name in nets}
            loops = {}
            for name in nets:  # warm-up; a fast step is repeated until a measurement lasts about MIN_TIMING
                steps[name](x, t, y)
                start = time.perf_counter()
                steps[name](x, t, y)
                loops[name] = max(1, math.ceil(MIN_TIMING / (time.perf_counter() - start)))
            for _ in range(args.repeats):
                for name in nets:
                    start = time.perf_counter()
                    for _ in range(loops[name]):
                        steps[name](x, t, y)
                    timings[name].append((time.perf_counter() - start) / loops[name])
            # teacher and student timed one after the other: the median of the per-repeat ratios cancels drift
            paired = statistics.median(
                a / b for a, b in zip(timings["teacher"], timings["student"], strict=True)
            )
            for name, net in nets.items():
                params = sum(p.numel() for p in net.parameters())
                rows.append(
                    {
                        "network": name,
                        "size": size,
                        "batch": batch,
                        "step_ms": 1000 * statistics.median(timings[name]),
                        "activation_mib": saved_bytes(net, x, t, y) / 2**20,
                        "state_mib": params * 16 / 2**20,
                        "time_ratio": paired,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.json").write_text(
        json.dumps({"threads": torch.get_num_threads(), "repeats": args.repeats, "rows": rows}, indent=2)
        + "\n"
    )
    lines = [
        "| image size | batch | teacher step (ms) | student step (ms) | time ratio | teacher activations (MiB) | "
        "student activations (MiB) | memory ratio |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by = {(r["network"], r["size"], r["batch"]): r for r in rows}
    for size in args.sizes:
        for batch in args.batches:
            t_, s_ = by[("teacher", size, batch)], by[("student", size, batch)]
            lines.append(
                f"| {size} | {batch} | {t_['step_ms']:.0f} | {s_['step_ms']:.0f} | "
                f"{t_['time_ratio']:.1f}x | {t_['activation_mib']:.0f} | {s_['activation_mib']:.0f} | "
                f"{t_['activation_mib'] / s_['activation_mib']:.1f}x |"
            )
    lines.append(
        f"\nWeights + gradients + AdamW moments: teacher {by[('teacher', args.sizes[0], args.batches[0])]['state_mib']:.1f}"
        f" MiB, student {by[('student', args.sizes[0], args.batches[0])]['state_mib']:.1f} MiB."
    )
    (args.out / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
