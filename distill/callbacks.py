"""Lightning callbacks: the teacher-vs-student FLOP report at the start of training."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from distill.flops import FlopReport, report_for_module, summary_metrics

__all__ = ["FlopReportCallback"]


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
