"""The ``distill`` command: LightningCLI (fit/validate/test) with subclass modes for model and data."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

# Frozen teachers, EMA and target copies are in eval mode by design.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


class DistillTrainer(L.Trainer):
    """Lightning's Trainer plus the extra ``distill`` subcommands (LightningCLI runs Trainer methods)."""

    def flops(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        steps_teacher: int = 50,
        steps_student: int = 50,
        cfg_teacher: int | None = None,
        cfg_student: int | None = None,
        latency: bool = False,
        repeats: int = 5,
        depth: int = 1,
        output: Path | None = None,
    ):
        """Print the MACs/parameters (and optionally CPU latency) of the config's teacher vs student.

        Args:
            model: the method from the config (``.teacher`` + ``.student``, or ``.model`` alone).
            datamodule: unused; accepted because LightningCLI passes it.
            steps_teacher: sampling steps of the teacher (and of a lone ``.model``).
            steps_student: sampling steps of the student.
            cfg_teacher: forwards per step of the teacher (default: 2 if conditional, classifier-free guidance).
            cfg_student: forwards per step of the student (default: 1 if guidance-distilled, else as above).
            latency: also time forwards on this machine (median of ``repeats`` after 2 warm-up calls).
            repeats: timed calls per network.
            depth: module depth of the per-module tables.
            output: write the report as JSON to this path.
        """
        from distill.flops import report_for_module

        report = report_for_module(
            model,
            steps_teacher=steps_teacher,
            steps_student=steps_student,
            cfg_teacher=cfg_teacher,
            cfg_student=cfg_student,
            latency=latency,
            repeats=repeats,
            module_depth=depth,
        )
        if self.is_global_zero:
            print(report.to_markdown())
            if output is not None:
                Path(output).parent.mkdir(parents=True, exist_ok=True)
                Path(output).write_text(report.to_json() + "\n")
                rank_zero_info(f"FLOP report written to {output}")
        return report


class DistillCLI(LightningCLI):
    """``distill fit|validate|test|flops -c CONFIG``; any model or data class is chosen by ``class_path``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("trainer_class", DistillTrainer)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("parser_kwargs", {"parser_mode": "yaml"})
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(L.LightningModule, L.LightningDataModule, *args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "flops": {"model", "datamodule"}}


def main(args: list[str] | None = None) -> None:
    """Console entry point; ``args`` lets tests drive it in-process."""
    DistillCLI(args=args)


if __name__ == "__main__":
    main()
