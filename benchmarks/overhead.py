"""Library overhead: one training step of our LightningModule (inside Lightning's Trainer) vs a minimal hand-written
PyTorch loop doing the same math with the same teacher, student, batch and optimizer.

Run:  OMP_NUM_THREADS=2 python benchmarks/overhead.py [--methods kd consistency progressive] [--steps 30]
Writes ``benchmarks/results/overhead.json`` and ``overhead.md``.

Time: both variants train in one process, alternated step by step (a hand-loop step runs after every
Lightning step, see :class:`Interleaved`), so drift in the machine's speed hits both alike; after a warm-up, the
time ratio is the median over steps of (Lightning step / the hand step beside it), with the per-variant medians
beside it. A step is its data fetch, forward, backward, optimizer step and EMA/target updates, plus (Lightning)
the hooks, our logging and the keyed random draws. Memory: each variant runs alone in a fresh process
(peaks only grow, so variants never share a process) and reports its peak resident set size during training
(VmHWM, reset after the teacher and student are built, so imports and loading do not hide the difference).

The hand loops use the library's pure math (schedule, parameterisation, DDIM and consistency steps) and the
global RNG; what they leave out is exactly what the library adds: Lightning's loop and hooks, the per-sample keyed
draws (distill.rng), condition handling, logging and the non-finite check.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from distill.data import DigitsDataModule
from distill.losses import pseudo_huber
from teachers.parameterization import (
    consistency_output,
    consistency_scalings,
    ddim_step,
    guidance_scale_embedding,
    progressive_x_target,
    target_for,
    to_prediction,
    truncated_snr_weight,
)
from teachers.schedule import previous_timesteps, q_sample

ROOT = Path(__file__).resolve().parent
METHODS = ("kd", "consistency", "progressive")
BATCH = 64


def build(method: str):
    from distill.methods.consistency import ConsistencyDistillation
    from distill.methods.knowledge import KnowledgeDistillation
    from distill.methods.progressive import ProgressiveDistillation
    from students.efficient import efficient_unet_digits
    from teachers import DiffusionTeacher

    torch.manual_seed(0)
    teacher = DiffusionTeacher.from_pretrained("builtin:digits")
    common = dict(evaluator=None, samples_per_class=0, optimizer=lambda p: torch.optim.AdamW(p, lr=2e-4))
    if method == "kd":
        return KnowledgeDistillation(teacher, efficient_unet_digits(teacher="builtin:digits"), **common)
    student = efficient_unet_digits(teacher="builtin:digits", time_cond_proj_dim=64)
    if method == "consistency":
        return ConsistencyDistillation(
            teacher, student, w_min=0.0, w_max=1.0, init_from_teacher=False, **common
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
def hand_step_fn(module, method: str):
    """A hand-written training step ``step(images, labels) -> loss`` for ``module``'s networks: the same math
    as ``module.training_losses`` with the global RNG drawn in the same order (tested), then AdamW and the
    EMA/target updates."""
    teacher, student = module.teacher, module.student
    schedule = teacher.schedule
    params = list(module.trainable_parameters())
    opt = torch.optim.AdamW(params, lr=2e-4)
    null = teacher.null_class

    def drop(labels, prob):
        keep = torch.rand(labels.shape) >= prob
        return torch.where(keep, labels, torch.full_like(labels, null))

    if method == "kd":
        feats_t, feats_s = {}, {}

        def keep(store, name):
            def hook(module_, inputs, output):
                store[name] = output[0] if isinstance(output, tuple) else output

            return hook

        for t_name, s_name in module.feature_pairs:
            teacher.unet.get_submodule(t_name).register_forward_hook(keep(feats_t, t_name))
            student.get_submodule(s_name).register_forward_hook(keep(feats_s, s_name))

        def step(images, labels):
            t = torch.randint(0, schedule.num_train_timesteps, (images.shape[0],))
            eps = torch.randn_like(images)
            alpha, sigma = schedule.alpha_sigma(t, dtype=torch.float32)
            z = q_sample(x0=images, eps=eps, alpha=alpha, sigma=sigma)
            target = target_for(
                prediction_type=schedule.prediction_type, x0=images, eps=eps, alpha=alpha, sigma=sigma
            )
            cond = drop(labels, module.cond_drop_prob)
            with torch.no_grad():
                t_out = teacher.unet(z, t, encoder_hidden_states=None, class_labels=cond).sample
            s_out = student(z, t, encoder_hidden_states=None, class_labels=cond).sample
            loss = F.mse_loss(s_out, target) + F.mse_loss(s_out, t_out)
            for t_name, s_name in module.feature_pairs:
                key = re.sub(r"[^0-9a-zA-Z_]", "_", f"{t_name}__{s_name}")
                s_feat = feats_s[s_name]
                if key in module.projections:
                    s_feat = module.projections[key](s_feat)
                loss = loss + F.mse_loss(s_feat, feats_t[t_name])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            module.ema.update(student)
            return loss.detach()

        return step

    if method == "consistency":
        solver = module.solver_timesteps

        def f(net, z, t, cond, w_emb):
            out = net(z, t, encoder_hidden_states=None, class_labels=cond, timestep_cond=w_emb).sample
            a, s = schedule.alpha_sigma(t, dtype=torch.float32)
            x0 = to_prediction(output=out, prediction_type=schedule.prediction_type, z=z, alpha=a, sigma=s).x0
            c_skip, c_out = consistency_scalings(timesteps=t, sigma_data=0.5, timestep_scaling=10.0)
            return consistency_output(z=z, x0=x0, c_skip=c_skip, c_out=c_out)

        def step(images, labels):
            b = images.shape[0]
            s = solver[torch.randint(0, len(solver), (b,))]
            t = (s - module.k).clamp(min=0)
            w = torch.rand(b)
            w_emb = guidance_scale_embedding(w=w, dim=64)
            eps = torch.randn_like(images)
            a_s, s_s = schedule.alpha_sigma(s, dtype=torch.float32)
            z_s = q_sample(x0=images, eps=eps, alpha=a_s, sigma=s_s)
            pred = f(student, z_s, s, labels, w_emb)
            with torch.no_grad():
                both = teacher.unet(
                    torch.cat([z_s, z_s]),
                    torch.cat([s, s]),
                    encoder_hidden_states=None,
                    class_labels=torch.cat([labels, torch.full_like(labels, null)]),
                ).sample
                cond_out, uncond_out = both.chunk(2)
                pc = to_prediction(
                    output=cond_out, prediction_type=schedule.prediction_type, z=z_s, alpha=a_s, sigma=s_s
                )
                pu = to_prediction(
                    output=uncond_out, prediction_type=schedule.prediction_type, z=z_s, alpha=a_s, sigma=s_s
                )
                wb = w.view(-1, 1, 1, 1)
                x0 = pc.x0 + wb * (pc.x0 - pu.x0)
                e = pc.eps + wb * (pc.eps - pu.eps)
                a_t, s_t = schedule.alpha_sigma(t, dtype=torch.float32)
                z_t = ddim_step(x0=x0, eps=e, alpha_next=a_t, sigma_next=s_t)
                target = f(module.target.module, z_t, t, labels, w_emb)
            loss = pseudo_huber(pred, target, c=module.huber_c)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            module.ema.update(student)
            module.target.update(student)
            return loss.detach()

        return step

    grid = module.teacher_grid()
    nxt = previous_timesteps(timesteps=grid)

    def step(images, labels):
        b = images.shape[0]
        j = 2 * torch.randint(0, len(grid) // 2, (b,))
        s, mid, end = grid[j], nxt[j], nxt[j + 1]
        w = torch.rand(b) * 0.0
        w_emb = guidance_scale_embedding(w=w, dim=64)
        eps = torch.randn_like(images)
        a_s, s_s = schedule.alpha_sigma(s, dtype=torch.float32)
        z_s = q_sample(x0=images, eps=eps, alpha=a_s, sigma=s_s)
        with torch.no_grad():
            out = teacher.unet(z_s, s, encoder_hidden_states=None, class_labels=labels).sample
            p1 = to_prediction(
                output=out, prediction_type=schedule.prediction_type, z=z_s, alpha=a_s, sigma=s_s
            )
            a_m, s_m = schedule.alpha_sigma(mid, dtype=torch.float32)
            z_mid = ddim_step(x0=p1.x0, eps=p1.eps, alpha_next=a_m, sigma_next=s_m)
            out = teacher.unet(
                z_mid, mid.clamp(min=0), encoder_hidden_states=None, class_labels=labels
            ).sample
            p2 = to_prediction(
                output=out, prediction_type=schedule.prediction_type, z=z_mid, alpha=a_m, sigma=s_m
            )
            a_e, s_e = schedule.alpha_sigma(end, dtype=torch.float32)
            z_end = ddim_step(x0=p2.x0, eps=p2.eps, alpha_next=a_e, sigma_next=s_e)
            target = progressive_x_target(
                z=z_s, z_end=z_end, alpha=a_s, sigma=s_s, alpha_end=a_e, sigma_end=s_e
            )
        out = student(z_s, s, encoder_hidden_states=None, class_labels=labels, timestep_cond=w_emb).sample
        x_student = to_prediction(
            output=out, prediction_type=schedule.prediction_type, z=z_s, alpha=a_s, sigma=s_s
        ).x0
        weight = truncated_snr_weight(alpha=a_s, sigma=s_s)
        loss = (weight * (x_student - target).pow(2).flatten(1).mean(1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        module.ema.update(student)
        return loss.detach()

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
    meta = {"threads": torch.get_num_threads(), "torch": torch.__version__, "batch": BATCH, "rows": rows}
    (args.out / "overhead.json").write_text(json.dumps(meta, indent=2) + "\n")
    lines = [
        "| method | LightningModule step (ms) | hand loop step (ms) | time ratio | peak RSS Lightning (MiB) | "
        "peak RSS hand (MiB) | memory ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['lightning_ms']:.1f} | {r['hand_ms']:.1f} | {r['time_ratio']:.3f}x | "
            f"{r['lightning_mib']:.0f} | {r['hand_mib']:.0f} | {r['memory_ratio']:.3f}x |"
        )
    (args.out / "overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
