"""Lightning callbacks: the teacher-vs-student FLOP report at the start of training; RNG state in checkpoints;
the model summary and progress bars the ``distill`` CLI installs in place of Lightning's defaults."""

from __future__ import annotations

import math
import random
import sys
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelSummary, ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

from distill.console import format_duration
from distill.flops import FlopReport, report_for_module, summary_metrics

__all__ = [
    "DistillModelSummary",
    "FlopReportCallback",
    "PlainProgressBar",
    "RNGStateCallback",
    "StepRichProgressBar",
    "StepTQDMProgressBar",
    "step_description",
]


class FlopReportCallback(L.Callback):
    """At fit start, count the method's networks and log the report to every logger (rank zero only).

    TensorBoard gets the Markdown table as text under ``tag``; every logger gets the per-network MACs and
    parameters and the student/teacher ratios as metrics at step 0 and as hyperparameters (so runs can be
    compared in the HPARAMS tab). The report stays available as :attr:`report`.

    Args:
        steps_teacher, steps_student: sampling steps used for MACs per sample.
        cfg_teacher, cfg_student: forwards per step (None: 2 for a conditional network sampled with classifier-free
            guidance, 1 for an unconditional or guidance-distilled one).
        latency: also time the forwards on the training device (slows the start of training).
        module_depth: depth of the per-module tables in the text (None: no tables).
        tag: the TensorBoard text tag.
    """

    def __init__(
        self,
        steps_teacher: int = 50,
        steps_student: int = 50,
        cfg_teacher: int | None = None,
        cfg_student: int | None = None,
        latency: bool = False,
        module_depth: int | None = 1,
        tag: str = "flops/report",
    ) -> None:
        super().__init__()
        self.steps_teacher = steps_teacher
        self.steps_student = steps_student
        self.cfg_teacher = cfg_teacher
        self.cfg_student = cfg_student
        self.latency = latency
        self.module_depth = module_depth
        self.tag = tag
        self.report: FlopReport | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.report = report_for_module(
            pl_module,
            steps_teacher=self.steps_teacher,
            steps_student=self.steps_student,
            cfg_teacher=self.cfg_teacher,
            cfg_student=self.cfg_student,
            latency=self.latency,
            module_depth=self.module_depth,
        )
        text = self.report.to_markdown()
        metrics = summary_metrics(self.report)
        for logger in trainer.loggers:
            _log_text(logger, self.tag, text)
            logger.log_metrics(metrics, step=0)
            logger.log_hyperparams(metrics)
            logger.save()
        rank_zero_info(text)


def _log_text(logger: Any, tag: str, text: str) -> None:
    experiment = getattr(logger, "experiment", None)
    if hasattr(experiment, "add_text"):
        experiment.add_text(tag, text, global_step=0)


def _rng_state() -> dict[str, Any]:
    """This process's global RNG states (torch CPU and CUDA, NumPy, Python) as tensors and plain values, so
    the checkpoint still loads with ``weights_only=True``."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            str(name),
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": [int(version), torch.tensor(internal, dtype=torch.int64), gauss],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss))


class RNGStateCallback(L.Callback):
    """Saves every process's global RNG state in checkpoints and restores it when a run resumes.

    The methods' own draws (noise, timesteps, guidance scales, label dropout) are keyed on (seed, step, index)
    and need no state (:mod:`distill.rng`); this covers everything else that reads the global RNGs (dropout in a
    student, user code). States are gathered from all ranks at save time and each rank gets its own back; the
    restore happens at the start of training, after the sanity-check validation. ``distill fit`` adds it when a
    config does not list it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._loaded: dict[str, Any] | None = None
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        states = [_rng_state()]
        if trainer is not None and trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, states[0])
            states = gathered
        return {"world_size": len(states), "states": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._loaded is None:
            return
        states = self._loaded["states"]
        if len(states) != trainer.world_size:
            rank_zero_info(
                f"RNG states were saved by {len(states)} processes and this run has {trainer.world_size}: "
                "global RNG states not restored (the methods' keyed draws do not depend on them)"
            )
        else:
            _set_rng_state(states[trainer.global_rank])
        self._loaded = None


class DistillModelSummary(ModelSummary):
    """Lightning's model summary without its FLOPs column and "Total FLOPs" line when it measured no FLOPs.

    Lightning counts FLOPs by running the module's ``example_input_array``; the methods set none (their cost is
    the MAC report of :class:`FlopReportCallback` and ``distill flops``), so every FLOPs cell would read 0. A
    module that does set ``example_input_array`` gets Lightning's table, FLOPs included. ``distill fit`` installs
    this summary in place of Lightning's default when the config names no model summary callback.
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if total_flops:
            ModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
            return
        columns = [(name, [str(v) for v in values]) for name, values in summary_data if name != "FLOPs"]
        totals = [
            (get_human_readable_count(trainable_parameters), "Trainable params"),
            (get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"),
            (get_human_readable_count(total_parameters), "Total params"),
            (get_formatted_model_size(model_size), "Total estimated model params size (MB)"),
            (str(total_training_modes["train"]), "Modules in train mode"),
            (str(total_training_modes["eval"]), "Modules in eval mode"),
        ]
        rank_zero_info("\n" + _summary_table(columns, totals))


def _summary_table(columns: list[tuple[str, list[str]]], totals: list[tuple[str, str]]) -> str:
    widths = [max([len(name), *map(len, values)]) for name, values in columns]
    rows = [[name for name, _ in columns], *(list(row) for row in zip(*(v for _, v in columns), strict=True))]
    lines = [" | ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=True)) for row in rows]
    rule = "-" * max(map(len, lines))
    return "\n".join([lines[0], rule, *lines[1:], rule, *(f"{value:<10} {label}" for value, label in totals)])


def step_description(trainer: L.Trainer) -> str | None:
    """``"Step 120/3000 (epoch 2)"`` when ``max_steps`` alone bounds the run (``max_epochs`` -1 or unset), else None.

    Lightning's description there is the epoch over ``max_epochs - 1`` ("Epoch 11/-2" in the Rich bar).
    """
    if trainer.max_epochs not in (None, -1) or trainer.max_steps in (None, -1):
        return None
    return f"Step {trainer.global_step}/{trainer.max_steps} (epoch {trainer.current_epoch})"


class StepTQDMProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar whose training description counts steps on step-bounded runs (:func:`step_description`).

    ``distill`` installs it in place of Lightning's default bar when the config names no progress bar.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        text = step_description(trainer)
        if text is not None:
            self.train_progress_bar.set_description(text)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        text = step_description(trainer)
        if text is not None:  # shown by the refresh of the update below
            self.train_progress_bar.set_description(text, refresh=False)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class StepRichProgressBar(RichProgressBar):
    """Lightning's Rich bar whose training description counts steps on step-bounded runs (:func:`step_description`).

    ``distill`` installs it in place of Lightning's default bar when the config names no progress bar.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._describe(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._describe(trainer)

    def _describe(self, trainer: L.Trainer) -> None:
        text = step_description(trainer)
        if text is None or self.progress is None or self.train_progress_bar_id is None:
            return
        style = self.theme.description
        self.progress.update(self.train_progress_bar_id, description=f"[{style}]{text}" if style else text)


def _format_value(value: Any) -> str:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _batches(num: Any) -> int | float:
    """Lightning's ``num_*_batches`` (one per dataloader, or one number) as one total."""
    return sum(num) if isinstance(num, list | tuple) else num


def _rate(steps: int, seconds: float) -> str:
    if seconds <= 0 or steps <= 0:
        return ""
    rate = steps / seconds
    return f"{rate:.2f} it/s" if rate >= 1 else f"{1 / rate:.2f} s/it"


class PlainProgressBar(ProgressBar):
    """Progress as plain text lines, for output that is not a terminal (a log file, CI, ``nohup``, a cluster job),
    where Rich draws nothing until the end and tqdm writes carriage-return frames.

    Training prints ``step 250/500  train/loss 0.0123  2.10 it/s  eta 1:59`` every ``every_n_steps`` optimizer
    steps and at the last one (the rate is that of the steps since the previous line, validation time excluded);
    each validation (not the sanity check) and test prints a line when it starts and one with its progress-bar
    metrics and duration when it ends, plus ``batch 40/400`` lines at every tenth of a loop of ``min_eval_batches``
    batches or more. ``distill`` installs it in place of Lightning's default bar when stdout is not a terminal and
    the config names no progress bar.

    Args:
        every_n_steps: training steps between lines (None: ``trainer.log_every_n_steps``, raised so that a run
            prints about ``max_lines`` lines at most).
        max_lines: the most training lines an automatic interval gives.
        min_eval_batches: validation/test loops of fewer batches print no per-batch lines.
        stream: where to write (None: ``sys.stdout`` at each line, so redirections made later are followed).
    """

    def __init__(
        self,
        every_n_steps: int | None = None,
        max_lines: int = 50,
        min_eval_batches: int = 20,
        stream: Any = None,
    ) -> None:
        super().__init__()
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1 or None, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.max_lines = max(1, max_lines)
        self.min_eval_batches = min_eval_batches
        self.stream = stream
        self._enabled = True
        self._every = 1
        self._total: int | None = None
        self._last_step = 0
        self._last_time = 0.0
        self._paused_at: float | None = None
        self._eval_start = 0.0
        self._eval_total: int | float = 0
        self._eval_every = 0

    # ProgressBar's interface
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("file", self.stream or sys.stdout)
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)

    def _line(self, text: str) -> None:
        if self._enabled:
            self.print(text)

    # training
    def total_steps(self, trainer: L.Trainer) -> int | None:
        """The step the run stops at: ``max_steps``, else Lightning's estimate from the epochs (None: unbounded)."""
        if trainer.max_steps not in (None, -1):
            return int(trainer.max_steps)
        try:
            total = trainer.estimated_stepping_batches
        except Exception:  # an iterable dataset without a length, an unbounded run
            return None
        return int(total) if math.isfinite(total) else None

    def interval(self, trainer: L.Trainer) -> int:
        """Steps between training lines (see ``every_n_steps``)."""
        if self.every_n_steps is not None:
            return self.every_n_steps
        every = max(1, int(trainer.log_every_n_steps or 1))
        total = self.total_steps(trainer)
        if total is not None:
            remaining = max(1, total - trainer.global_step)
            every = max(every, math.ceil(remaining / self.max_lines))
        return every

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._total = self.total_steps(trainer)
        self._every = self.interval(trainer)
        self._last_step = trainer.global_step
        self._last_time = time.perf_counter()
        self._paused_at = None
        to = f"to step {self._total}" if self._total is not None else "without a step limit"
        start = f" from step {trainer.global_step}" if trainer.global_step else ""
        self._line(f"training{start} {to}: a line every {self._every} steps")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        last = self._total is not None and step >= self._total
        if step - self._last_step >= self._every or (last and step > self._last_step):
            self._line(self.train_line(trainer, pl_module))

    def train_line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        """The training line at this step; resets the rate's window."""
        now = time.perf_counter()
        step = trainer.global_step
        steps, seconds = step - self._last_step, now - self._last_time
        self._last_step, self._last_time = step, now
        parts = [f"step {step}/{self._total}" if self._total is not None else f"step {step}"]
        if self._total is None or trainer.max_epochs not in (None, -1):
            parts[0] += f" (epoch {trainer.current_epoch})"
        parts += [
            f"{name} {_format_value(value)}" for name, value in self._metrics(trainer, pl_module, "val")
        ]
        rate = _rate(steps, seconds)
        if rate:
            parts.append(rate)
            if self._total is not None and step < self._total:
                parts.append(f"eta {format_duration((self._total - step) * seconds / steps)}")
        return "  ".join(parts)

    def _metrics(self, trainer: L.Trainer, pl_module: L.LightningModule, skip: str) -> list[tuple[str, Any]]:
        """The progress-bar metrics (no version number), leaving out those whose name starts with ``skip``."""
        metrics = self.get_metrics(trainer, pl_module)
        return [(k, v) for k, v in metrics.items() if k != "v_num" and not (skip and k.startswith(skip))]

    # validation and test
    def _eval_start_line(self, trainer: L.Trainer, what: str, total: int | float) -> None:
        self._eval_start = time.perf_counter()
        self._eval_total = total
        finite = math.isfinite(total) and total >= self.min_eval_batches
        self._eval_every = math.ceil(total / 10) if finite else 0
        at = f" at step {trainer.global_step}" if trainer.state.fn == "fit" else ""
        size = f" ({int(total)} batch{'' if total == 1 else 'es'})" if math.isfinite(total) else ""
        self._line(f"{what}{at}{size}")

    def _eval_batch_line(self, what: str, batch_idx: int) -> None:
        done = batch_idx + 1
        if self._eval_every and (done % self._eval_every == 0 or done == self._eval_total):
            elapsed = time.perf_counter() - self._eval_start
            self._line(f"{what} batch {done}/{int(self._eval_total)}  {format_duration(elapsed)}")

    def _eval_end_line(
        self, trainer: L.Trainer, pl_module: L.LightningModule, what: str, prefix: str
    ) -> None:
        elapsed = format_duration(time.perf_counter() - self._eval_start)
        metrics = [
            f"{name} {_format_value(value)}"
            for name, value in self._metrics(trainer, pl_module, "")
            if name.startswith(prefix)
        ]
        self._line("  ".join([f"{what} done in {elapsed}", *metrics]))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._paused_at = time.perf_counter()
        self._eval_start_line(trainer, "validation", _batches(trainer.num_val_batches))

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._eval_batch_line("validation", batch_idx)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._eval_end_line(trainer, pl_module, "validation", "val")
        if self._paused_at is not None:  # the training rate leaves validation out
            self._last_time += time.perf_counter() - self._paused_at
            self._paused_at = None

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_start_line(trainer, "test", _batches(trainer.num_test_batches))

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_batch_line("test", batch_idx)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_end_line(trainer, pl_module, "test", "test")
