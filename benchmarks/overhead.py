"""Library overhead: one training step of our LightningModule (inside Lightning's Trainer) vs a minimal hand-written
PyTorch loop doing the same math with the same teacher, student, batch and optimizer.

Run:  OMP_NUM_THREADS=2 python benchmarks/overhead.py [--methods kd consistency progressive dmd2] [--steps 30]
Writes ``benchmarks/results/overhead.json`` (docs/benchmarks.md renders it: ``benchmarks/update_docs.py``).

Time: both variants train in one process, alternated step by step (a hand-loop step runs after every
Lightning step, see :class:`Interleaved`), so drift in the machine's speed hits both alike; after a warm-up, the
time ratio is the median over steps of (Lightning step / the hand step beside it), with the per-variant medians
beside it. A step is its data fetch, forward, backward, optimizer step and EMA/target updates, plus (Lightning)
the hooks, our logging and the keyed random draws. Memory: each variant runs alone in a fresh process
(peaks only grow, so variants never share a process) and reports its peak resident set size during training
(VmHWM, reset after the teacher and student are built, so imports and loading do not hide the difference).

The hand loops compute each method's own loss (its ``training_losses``, i.e. its objective in distill.objectives)
with the global RNG, then step AdamW and the EMA/target copies by hand; what they leave out is exactly what the
library adds: Lightning's loop and hooks, the per-sample keyed draws (distill.rng), logging and the non-finite
check.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import tables
import torch

from distill.data import DigitsDataModule
from distill.provenance import provenance

ROOT = Path(__file__).resolve().parent
METHODS = ("kd", "consistency", "progressive", "dmd2")
BATCH = 64


def build(method: str):
    from distill.methods.consistency import ConsistencyDistillation
    from distill.methods.distribution_matching import DistributionMatchingDistillation
    from distill.methods.knowledge import KnowledgeDistillation
    from distill.methods.progressive import ProgressiveDistillation
    from students.efficient import efficient_unet_digits
    from teachers import DiffusionTeacher

    torch.manual_seed(0)
    teacher = DiffusionTeacher.from_pretrained("builtin:digits")
    common = dict(evaluator=None, samples_per_class=0, optimizer=lambda p: torch.optim.AdamW(p, lr=2e-4))
    if method == "kd":
        return KnowledgeDistillation(teacher, efficient_unet_digits(teacher="builtin:digits"), **common)
    if method == "dmd2":  # configs/digits/dmd2.yaml's players: an efficient-UNet generator and fake score
        return DistributionMatchingDistillation(
            teacher,
            efficient_unet_digits(teacher="builtin:digits"),
            fake_score=efficient_unet_digits(teacher="builtin:digits"),
            critic_optimizer=lambda p: torch.optim.AdamW(p, lr=2e-4),
            **common,
        )
    student = efficient_unet_digits(teacher="builtin:digits", time_cond_proj_dim=64)
    if method == "consistency":
        return ConsistencyDistillation(
            teacher, student, guidance_min=1.0, guidance_max=2.0, init_from_teacher=False, **common
        )
    return ProgressiveDistillation(
        teacher, student, teacher_steps=64, final_steps=1, round_steps=10_000, **common
    )


def loader():
    dm = DigitsDataModule(batch_size=BATCH)
    dm.setup("fit")
    images, labels = dm.train_set.tensors
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels), batch_size=BATCH, shuffle=True, drop_last=True
    )


# -- the hand-written loops ----------------------------------------------------------------------------------
def hand_losses_fn(module, method: str):
    """``losses(images, labels) -> {name: loss}``: the method's own loss (``training_losses``, which calls its
    objective in :mod:`distill.objectives`) on the batch, with the draws from the global RNG instead of the keyed
    per-sample generators."""
    from distill.rng import GeneratorRandom

    rng = GeneratorRandom(None)
    return lambda images, labels: module.training_losses((images, labels), rng=rng)


def hand_step_fn(module, method: str):
    """A hand-written training step ``step(images, labels) -> loss`` for ``module``'s networks: the method's loss
    (:func:`hand_losses_fn`, global-RNG draws), then AdamW and the EMA/target updates. What it leaves out is
    exactly what the library adds around the loss: Lightning's loop and hooks, the per-sample keyed draws
    (:mod:`distill.rng`), logging and the non-finite check."""
    if method == "dmd2":
        return hand_dmd2_step(module)
    params = list(module.trainable_parameters())
    opt = torch.optim.AdamW(params, lr=2e-4)
    losses = hand_losses_fn(module, method)

    def step(images, labels):
        loss = losses(images, labels)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        module.ema.update(module.student)
        if method == "consistency":
            module.target.update(module.student)
        return loss.detach()

    return step


def hand_dmd2_step(module):
    """DMD2 by hand: the generator's loss on the first of every ``update_ratio + 1`` batches, the critic's on the
    others (the module's own ``generator_losses`` / ``critic_losses``, global-RNG draws), each with its AdamW, and
    the generator's EMA after its updates: the turn schedule the Lightning step keeps on ``global_step``."""
    from distill.rng import GeneratorRandom

    rng = GeneratorRandom(None)
    generator = torch.optim.AdamW(module.student.parameters(), lr=2e-4)
    critic = torch.optim.AdamW(list(module.critic_parameters()), lr=2e-4)
    done = [0]

    def step(images, labels):
        turn = module.is_generator_turn(done[0])
        done[0] += 1
        losses = (module.generator_losses if turn else module.critic_losses)((images, labels), rng=rng)
        opt = generator if turn else critic
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        if turn:
            module.ema.update(module.student)
        return losses["loss"].detach()

    return step


# -- timing ------------------------------------------------------------------------------------------------
class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_end(self, *args) -> None:
        self.stamps.append(time.perf_counter())


def quiet_trainer(max_steps: int, timer: L.Callback, *, precision: str = "32-true") -> L.Trainer:
    """A CPU Trainer that only trains: no logger, checkpoints, progress bar or validation. A fresh Trainer counts
    from step 0, so ``max_steps = warmup + steps + 1`` stamps give ``steps`` intervals after the warm-up."""
    return L.Trainer(
        accelerator="cpu",
        precision=precision,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )


def timed_fit(
    module, steps: int, warmup: int, *, precision: str = "32-true", datamodule=None
) -> tuple[list[float], float]:
    """``warmup + steps`` more training steps in a quiet CPU Trainer: the per-step times after the warm-up, and the
    seconds from the call to the end of the first step (set-up and compilation included)."""
    timer = StepTimer()
    start = time.perf_counter()
    trainer = quiet_trainer(warmup + steps + 1, timer, precision=precision)
    if datamodule is not None:
        trainer.fit(module, datamodule=datamodule)
    else:
        trainer.fit(module, train_dataloaders=loader())
    first = timer.stamps[0] - start if timer.stamps else float("nan")
    return [b - a for a, b in zip(timer.stamps[warmup:], timer.stamps[warmup + 1 :], strict=False)], first


def lightning_block(module, steps: int, warmup: int) -> list[float]:
    return timed_fit(module, steps, warmup)[0]


def hand_block(step, steps: int, warmup: int) -> list[float]:
    stamps = []
    batches = endless(loader())
    for _ in range(warmup + steps + 1):
        step(*next(batches))
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :], strict=False)]


def endless(data):
    while True:
        yield from data


class Interleaved(L.Callback):
    """One hand-loop step after every Lightning step, so the two alternate step by step and any drift in the
    machine's speed (other processes, frequency scaling) hits both alike.

    A Lightning interval runs from the end of the previous hand step to the end of this Lightning step: the
    module's own batch-end hooks, Lightning's bookkeeping, the data fetch and the whole optimisation step, each
    counted once. A hand interval is its data fetch and step."""

    def __init__(self, hand_step) -> None:
        self.hand_step = hand_step
        self.batches = endless(loader())
        self.mark: float | None = None
        self.lightning: list[float] = []
        self.hand: list[float] = []

    def on_train_batch_end(self, *args) -> None:
        now = time.perf_counter()
        if self.mark is not None:
            self.lightning.append(now - self.mark)
        start = time.perf_counter()
        with torch.enable_grad():
            self.hand_step(*next(self.batches))
        self.hand.append(time.perf_counter() - start)
        self.mark = time.perf_counter()


def time_method(method: str, *, steps: int, warmup: int) -> dict:
    lightning_module = build(method)
    step = hand_step_fn(build(method), method)
    timer = Interleaved(step)
    trainer = quiet_trainer(warmup + steps + 1, timer)
    trainer.fit(lightning_module, train_dataloaders=loader())
    lt = timer.lightning[warmup:]
    ht = timer.hand[warmup + 1 :]  # pair each Lightning interval with the hand step that follows it
    pairs = [a / b for a, b in zip(lt, ht, strict=False)]
    ml, mh = statistics.median(lt), statistics.median(ht)
    return {
        "method": method,
        "lightning_ms": 1000 * ml,
        "hand_ms": 1000 * mh,
        "time_ratio": statistics.median(pairs),
        "time_ratio_q1_q3": [float(q) for q in torch.tensor(pairs).quantile(torch.tensor([0.25, 0.75]))],
        "n": len(pairs),
    }


def peak_memory(method: str, variant: str, steps: int) -> float:
    """Peak RSS (MiB) of one variant alone in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--memory-probe", method, variant, "--steps", str(steps)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) so the peak of the training phase alone can be read."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mib() -> float:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_probe(method: str, variant: str, steps: int) -> None:
    """Peak RSS while training (the build and imports excluded where Linux lets us reset the peak)."""
    module = build(method)
    _reset_peak()
    if variant == "lightning":
        lightning_block(module, steps, 2)
    else:
        hand_block(hand_step_fn(module, method), steps, 2)
    print(_peak_mib())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--steps", type=int, default=30, help="timed steps per variant (alternated step by step)"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--memory-probe", nargs=2, metavar=("METHOD", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(*args.memory_probe, args.steps)
        return
    rows = []
    for method in args.methods:
        row = time_method(method, steps=args.steps, warmup=args.warmup)
        row["lightning_mib"] = peak_memory(method, "lightning", 10)
        row["hand_mib"] = peak_memory(method, "hand", 10)
        row["memory_ratio"] = row["lightning_mib"] / row["hand_mib"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": BATCH,
        "rows": rows,
        "meta": provenance(),
    }
    (args.out / "overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    print(tables.overhead(result))


if __name__ == "__main__":
    main()
