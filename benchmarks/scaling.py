"""Scaling: training-step time and memory of the digits teacher and its efficient student against batch size and
image size (16, 32, 64 px).

Run:  OMP_NUM_THREADS=2 python benchmarks/scaling.py [--repeats 5]
Writes ``benchmarks/results/scaling.{json,md}``.

One step = forward, MSE loss, backward and an AdamW step of the network alone (what a student costs to train; the
teacher's row is what training it cost), on random data. After a warm-up pass, ``--repeats`` passes over all
configurations, teacher and student in turn (fast configurations time several steps per measurement, about a
second each); step times are medians and the time ratio is the median of the per-pass ratios. Memory: the bytes
autograd saves for the backward pass (activations, counted exactly with ``saved_tensors_hooks``), plus weights,
gradients and AdamW moments (16 bytes per parameter). Both UNets are convolutional, so they run at any size that
the down-sampling divides.
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
from paired import paired_ratio

from distill.provenance import provenance

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
    """One denoising-training step of ``net`` (the library's objective, :func:`distill.objectives.denoising_loss`)."""
    from distill.objectives import NoisingDraws, denoising_loss
    from teachers.schedule import NoiseSchedule

    schedule = NoiseSchedule.from_scheduler_config(
        {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"}
    )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step(x, t, y):
        draws = NoisingDraws(t=t, noise=torch.randn_like(x))
        loss = denoising_loss(net=net, schedule=schedule, x0=x, cond=y, draws=draws)["loss"]
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
    configs = [(size, batch) for size in args.sizes for batch in args.batches]
    data = {}
    loops: dict[tuple, int] = {}
    for size, batch in configs:  # warm-up pass; a fast step is repeated until a measurement lasts MIN_TIMING
        data[size, batch] = (
            torch.randn(batch, 1, size, size),
            torch.randint(0, 1000, (batch,)),
            torch.arange(batch) % 10,
        )
        for name in nets:
            steps[name](*data[size, batch])
            start = time.perf_counter()
            steps[name](*data[size, batch])
            loops[name, size, batch] = max(1, math.ceil(MIN_TIMING / (time.perf_counter() - start)))
    timings: dict[tuple, list[float]] = {(name, *c): [] for name in nets for c in configs}
    # whole passes over every configuration, so each one's measurements are spread over the run (a process's
    # speed at one size drifts as it runs others); within a pass, teacher and student in turn, first alternating
    for p in range(args.repeats):
        for size, batch in configs:
            for name in list(nets) if p % 2 == 0 else list(nets)[::-1]:
                n = loops[name, size, batch]
                start = time.perf_counter()
                for _ in range(n):
                    steps[name](*data[size, batch])
                timings[name, size, batch].append((time.perf_counter() - start) / n)
    rows = []
    for size, batch in configs:
        paired, spread = paired_ratio(timings["teacher", size, batch], timings["student", size, batch])
        for name, net in nets.items():
            params = sum(p.numel() for p in net.parameters())
            rows.append(
                {
                    "network": name,
                    "size": size,
                    "batch": batch,
                    "step_ms": 1000 * statistics.median(timings[name, size, batch]),
                    "activation_mib": saved_bytes(net, *data[size, batch]) / 2**20,
                    "state_mib": params * 16 / 2**20,
                    "time_ratio": paired,
                    "time_ratio_q1_q3": spread,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"threads": torch.get_num_threads(), "repeats": args.repeats, "rows": rows, "meta": provenance()}
    (args.out / "scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    print(tables.scaling(result))


if __name__ == "__main__":
    main()
