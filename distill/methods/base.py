"""The base of every distillation method: a frozen teacher, a trained student, an optional EMA copy.

The contract it keeps (DESIGN.md): the teacher is frozen at construction, never in the optimizer, never
synchronised by DDP and never written to checkpoints; everything student-sized that the method owns (student,
EMA, projections, target networks) is saved, and loading checks that the only missing keys are the teacher's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from distill.ema import EMA
from distill.methods.common import configure
from distill.rng import GeneratorRandom, KeyedRandom, global_sample_indices
from teachers.teacher import DiffusionTeacher

TEACHER_PREFIX = "teacher."
NONFINITE = ("stop", "skip")


class DistillationModule(L.LightningModule):
    """Teacher + student + optional EMA; subclasses implement :meth:`training_losses`.

    Args:
        teacher: the frozen teacher (``teachers.DiffusionTeacher``).
        student: the network to train; called like the teacher's network (diffusers signature).
        optimizer: optimizer factory over :meth:`trainable_parameters`.
        lr_scheduler: optional LR scheduler factory, stepped every optimizer step.
        ema_decay: decay of the student's EMA copy (None: no EMA).
        nonfinite: what a non-finite training loss does: "stop" (raise, naming the step and the loss terms) or
            "skip" (no optimizer, EMA or target update for that batch; counted in ``train/nonfinite_steps``
            and in checkpoints). All processes agree, so DDP never deadlocks on one rank's skip. Deciding
            needs the loss on the host: one sync per step, as the progress bar's loss display already makes.
        seed: the seed of the training draws (noise, timesteps, guidance scales, label dropout), each sample's
            keyed on (seed, global step, position in the global batch) so that results do not depend on the
            number of processes (:mod:`distill.rng`). None: the run's ``seed_everything`` value (0 if unset).
    """

    def __init__(
        self,
        teacher: DiffusionTeacher,
        student: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        ema_decay: float | None = 0.999,
        nonfinite: str = "stop",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.seed = seed
        self._batch_idx = 0
        self._skipped = False
        if nonfinite not in NONFINITE:
            raise ValueError(f"nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
        self.nonfinite = nonfinite
        self.nonfinite_steps = 0
        if not isinstance(teacher, DiffusionTeacher):
            raise TypeError(
                f"teacher must be a teachers.DiffusionTeacher (e.g. DiffusionTeacher.from_pretrained(path)), "
                f"got {type(teacher).__name__}"
            )
        trained = getattr(student, "trained_prediction_type", None)
        if trained is not None and trained != teacher.prediction_type:
            raise ValueError(
                f"student: its weights were trained to predict {trained!r} "
                f"({getattr(student, 'trained_prediction_source', 'its scheduler config')}) but the teacher "
                f"predicts {teacher.prediction_type!r}; a student must start from weights of its teacher's "
                "parameterisation. Start from a student exported from this teacher, or from scratch / the teacher's "
                "weights (a students.* builder)"
            )
        if student is teacher.unet:
            raise ValueError("student must be a separate network, not the teacher's own (copy it first)")
        self.teacher = teacher
        self.student = student
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.ema = EMA(student, decay=ema_decay) if ema_decay is not None else None
        ignore = [TEACHER_PREFIX + k for k in teacher.state_dict()]
        if self.ema is not None:
            ignore += [f"ema.{k}" for k in self.ema.state_dict()]
        self._ddp_params_and_buffers_to_ignore = ignore

    # -- what subclasses provide --------------------------------------------------------------------------
    def training_losses(self, batch: Any) -> dict[str, torch.Tensor]:
        """Loss terms of one batch; the key ``loss`` is the total that is optimised."""
        raise NotImplementedError

    def extra_trainable_modules(self) -> list[nn.Module]:
        """Method-owned trainable modules besides the student (e.g. KD projections)."""
        return []

    # -- training -----------------------------------------------------------------------------------------
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.student.parameters()
        for module in self.extra_trainable_modules():
            yield from module.parameters()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        self._batch_idx = batch_idx
        self._skipped = False
        losses = self.training_losses(batch)
        if not self._all_finite(losses["loss"]):
            return self._nonfinite(losses, batch_idx)
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name == "loss", sync_dist=self._distributed())
        if self.nonfinite_steps:
            self.log("train/nonfinite_steps", float(self.nonfinite_steps))
        return losses["loss"]

    def training_seed(self) -> int:
        if self.seed is not None:
            return int(self.seed)
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def train_random(self, batch_size: int) -> KeyedRandom | GeneratorRandom:
        """The draws for this process's training micro-batch, keyed on (seed, global step, global index).

        Outside a trainer (a bare call), the global RNG."""
        trainer = self._trainer
        if trainer is None:
            return GeneratorRandom(None, device=self.device)
        accumulate = max(int(getattr(trainer, "accumulate_grad_batches", 1)), 1)
        indices = global_sample_indices(
            batch_size=batch_size,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            micro_batch=self._batch_idx % accumulate,
        )
        return KeyedRandom(
            seed=self.training_seed(), step=self.global_step, indices=indices, device=self.device
        )

    def _distributed(self) -> bool:
        return self._trainer is not None and self._trainer.world_size > 1

    def _all_finite(self, loss: torch.Tensor) -> bool:
        finite = bool(torch.isfinite(loss.detach()).all())
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:  # every rank skips, or none does
            finite = bool(trainer.strategy.reduce_boolean_decision(finite, all=True))
        return finite

    def _nonfinite(self, losses: dict[str, torch.Tensor], batch_idx: int) -> None:
        terms = {name: float(value.detach().float().mean()) for name, value in losses.items()}
        bad = [name for name, value in terms.items() if not math.isfinite(value)] or ["loss (another rank)"]
        message = (
            f"non-finite training loss at global step {self.global_step} (batch {batch_idx}): {bad} "
            f"(terms: {terms})"
        )
        if self.nonfinite == "stop":
            raise FloatingPointError(
                message + ". Lower the learning rate or use fp32/bf16 instead of fp16, or set "
                "`nonfinite: skip` to skip such batches (counted in train/nonfinite_steps)."
            )
        self.nonfinite_steps += 1
        self._skipped = True
        rank_zero_warn(message + f"; batch skipped ({self.nonfinite_steps} so far)")
        self.log("train/nonfinite_steps", float(self.nonfinite_steps))
        return None

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then :meth:`after_step` (unless the batch was skipped).

        Here rather than in ``on_train_batch_end``: callbacks' batch-end hooks (``ModelCheckpoint``) run before the
        module's, so a checkpoint would hold a student one EMA/target/round update ahead of its copies, and a
        run resumed from it would differ. This also updates once per optimizer step under gradient accumulation.
        """
        super().optimizer_step(*args, **kwargs)
        if not self._skipped:  # a skipped batch changes nothing
            # Lightning counts the step once this hook returns: ``global_step + 1`` steps are done
            self.after_step(steps_done=self.global_step + 1)

    def after_step(self, steps_done: int) -> None:
        """After every applied optimizer step (``steps_done`` of them, this one included): the EMA update
        (subclasses add target and round updates)."""
        if self.ema is not None:
            self.ema.update(self.student)

    def configure_optimizers(self):
        return configure(self.trainable_parameters(), self.optimizer, self.lr_scheduler)

    def eval_student(self) -> nn.Module:
        """The weights to evaluate: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.student

    def save_pretrained(self, directory: str | Path, *, use_ema: bool = True) -> None:
        """Write the student (EMA weights by default) as ``unet/`` with the teacher's ``scheduler/``: a folder
        that ``DiffusionTeacher.from_pretrained`` (and so ``distill test``) loads."""
        directory = Path(directory)
        student = self.eval_student() if use_ema else self.student
        if not hasattr(student, "save_pretrained"):
            raise TypeError(
                f"{type(student).__name__} has no save_pretrained(); only diffusers students export"
            )
        student.save_pretrained(directory / "unet")
        self.export_schedule().save_pretrained(directory / "scheduler")

    def export_schedule(self):
        """The scheduler config an export carries: the teacher's (methods that change how the student samples,
        e.g. consistency or progressive distillation, return their own)."""
        return self.teacher.schedule

    # -- checkpoints: never the frozen teacher --------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(TEACHER_PREFIX)]:
            del state[key]
        checkpoint["teacher_source"] = self.teacher.source
        checkpoint["nonfinite_steps"] = self.nonfinite_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check the checkpoint holds exactly the non-teacher state, then fill in the live teacher's tensors.

        Filling in (instead of ``strict=False``) keeps Lightning's strict load, so any other missing or
        unexpected key still fails, naming the keys.
        """
        state = checkpoint["state_dict"]
        expected = set(self.state_dict())
        teacher_keys = {k for k in expected if k.startswith(TEACHER_PREFIX)}
        missing = sorted(expected - teacher_keys - set(state))
        unexpected = sorted(set(state) - expected)
        stray_teacher = sorted(k for k in state if k.startswith(TEACHER_PREFIX))
        if missing or unexpected or stray_teacher:
            raise RuntimeError(
                "checkpoint does not match this method: "
                f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
                + (
                    f", teacher tensors that should never be saved {stray_teacher[:4]}"
                    if stray_teacher
                    else ""
                )
                + ". Was it written by the same config (student architecture, method)?"
            )
        for key, value in self.teacher.state_dict(prefix=TEACHER_PREFIX, keep_vars=False).items():
            state[key] = value
        self.nonfinite_steps = int(checkpoint.get("nonfinite_steps", 0))
