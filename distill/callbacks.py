"""Lightning callbacks: the teacher-vs-student FLOP report at the start of training; RNG state in checkpoints;
the model summary and progress bars the ``distill`` CLI installs in place of Lightning's defaults."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelSummary, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

from distill.flops import FlopReport, report_for_module, summary_metrics

__all__ = [
    "DistillModelSummary",
    "FlopReportCallback",
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
