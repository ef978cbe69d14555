"""The LightningCLI behind ``distill fit|validate|test|flops|export|precompute``, and rebuilding a run's module
from its saved config."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from distill.provenance import provenance

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
                record = {**report.to_dict(), "meta": provenance(module="distill.cli")}
                Path(output).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
                rank_zero_info(f"FLOP report written to {output}")
        return report

    def export(
        self,
        model: L.LightningModule,
        ckpt_path: Path,
        output: Path,
        datamodule: L.LightningDataModule | None = None,
        weights: str = "ema",
        overwrite: bool = False,
        metrics: Path | None = None,
        weights_only: bool | None = None,
        format: str = "diffusers",
        int8: bool = False,
        onnx_opset: int = 18,
        int8_eval_samples: int = 1000,
        quantize: str | None = None,
        max_batch: int = 16,
        int4w_group_size: int = 32,
        average: list[Path] | None = None,
    ) -> Path | None:
        """Write the trained student as a diffusers-format folder (unet/, scheduler/, README.md model card).

        Args:
            model: the method from the run's config (its saved ``config.yaml``).
            ckpt_path: the checkpoint to export (``.../checkpoints/last.ckpt``).
            output: the folder to write; refused if it exists, unless ``overwrite``.
            datamodule: unused; accepted because LightningCLI passes it.
            weights: "ema" (default) or "raw".
            overwrite: replace an existing ``output``.
            metrics: an ``eval.json`` from ``distill test`` to put in the model card.
            weights_only: accepted so a run's saved config.yaml parses; checkpoints always load weights only.
            format: "diffusers" (default), "onnx" (adds ``onnx/model.onnx``: dynamic batch, checked against
                PyTorch in onnxruntime; needs the ``export`` extra) or "executorch" (adds ``executorch/model.pte``:
                ExecuTorch with the XNNPACK delegate, run through ExecuTorch's runtime; needs the ``deploy`` extra).
            int8: also write ``onnx/model_int8.onnx`` (onnxruntime dynamic quantisation: weights only).
            quantize: "int8": static int8 weights and activations in the chosen format (``onnx/model_int8_qdq.onnx``
                or ``executorch/model_int8.pte``): a quantization-aware run's trained scales, else post-training
                quantization calibrated on the student's sampling trajectory (``deploy`` extra). "int4w"
                (``--format executorch`` only): ``executorch/model_int4w.pte``, 4-bit weights in the linear layers
                with int8 dynamic activations (torchao 8da4w), convolutions in fp32.
            int4w_group_size: inputs sharing one 4-bit weight scale (0: one per output channel).
            max_batch: the ExecuTorch programs' largest batch (their memory plan); larger batches run in chunks.
            onnx_opset: the ONNX opset to export with.
            int8_eval_samples: digits students only: samples for the int8-vs-fp32 FID/accuracy in the card
                (0 skips it).
            average: more checkpoints of the same run (e.g. ``'[.../step=6000.ckpt, .../step=7500.ckpt]'``): the
                exported weights are the uniform mean of theirs and ``ckpt_path``'s (EMA or raw, per ``weights``).
        """
        from distill.export import export_module

        if not self.is_global_zero:
            return None
        path = export_module(
            model,
            ckpt_path=ckpt_path,
            output=output,
            weights=weights,
            overwrite=overwrite,
            metrics=metrics,
            format=format,
            int8=int8,
            onnx_opset=onnx_opset,
            int8_eval_samples=int8_eval_samples,
            quantize=quantize,
            max_batch=max_batch,
            int4w_group_size=int4w_group_size,
            average=average or (),
        )
        rank_zero_info(f"exported to {path}")
        return path

    def precompute(
        self,
        model: L.LightningModule,
        output: Path,
        datamodule: L.LightningDataModule | None = None,
        shard_size: int = 1024,
        batch_size: int = 16,
        dtype: str = "float16",
        overwrite: bool = False,
    ) -> Path:
        """Encode the config's caption folder with its teacher's VAE and text encoder(s) into safetensors shards,
        for ``distill.data_t2i.LatentShardDataModule`` (the fast path: no VAE or text encoder while training).

        Args:
            model: the method from the config (its ``.teacher`` does the encoding).
            output: the shard folder to write (refused if it exists, unless ``overwrite``).
            datamodule: the config's ``CaptionFolderDataModule``.
            shard_size: samples per shard file.
            batch_size: images encoded per forward.
            dtype: stored dtype of latents and embeddings (float16, bfloat16 or float32).
            overwrite: replace an existing ``output``.
        """
        from distill.data_t2i import CaptionFolderDataModule, precompute

        if not isinstance(datamodule, CaptionFolderDataModule):
            raise ValueError(
                f"distill precompute reads a caption folder: set data.class_path to distill.data_t2i.CaptionFolderDataModule "
                f"(got {type(datamodule).__name__})"
            )
        teacher = getattr(model, "teacher", None)
        if teacher is None:
            raise ValueError("distill precompute needs a method with a teacher (model.init_args.teacher)")
        teacher.to(self.strategy.root_device)
        return precompute(
            teacher,
            datamodule,
            output,
            shard_size=shard_size,
            batch_size=batch_size,
            dtype=dtype,
            overwrite=overwrite,
        )


# The top-level ``distill --help`` only: ``distill sample``, ``convert`` and ``prune`` are dispatched by
# distill.cli.main before LightningCLI parses anything, so they are not parser subcommands and would go unmentioned.
DESCRIPTION = "Distil diffusion teachers into small, few-step students: a subcommand runs a YAML config (-c)."
EPILOG = (
    "More subcommands, without a config: `distill sample` draws a PNG grid from an export folder or a run "
    "(distill sample --help); `distill convert` writes ONNX/ExecuTorch files (fp32, int8, 4-bit weights) for an "
    "export folder or a shipped student (distill convert --help); `distill prune` measures what each block of a network "
    "is worth (distill prune --help)."
)


# the subcommands that run the trainer (set up loggers, write config.yaml); the others only build objects
RUN_SUBCOMMANDS = ("fit", "validate", "test", "predict")


class DistillCLI(LightningCLI):
    """``distill fit|validate|test|flops -c CONFIG``; any model or data class is chosen by ``class_path``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("trainer_class", DistillTrainer)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("seed_everything_default", 0)
        # Keys that are not subcommand names go to the top-level parser only (LightningCLI._setup_parser_kwargs),
        # so `distill fit --help` keeps its own description.
        parser_kwargs = dict(kwargs.get("parser_kwargs", {"parser_mode": "yaml"}))
        parser_kwargs.setdefault("description", DESCRIPTION)
        parser_kwargs.setdefault("epilog", EPILOG)
        kwargs["parser_kwargs"] = parser_kwargs
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(L.LightningModule, L.LightningDataModule, *args, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        """Refuse options written for an older meaning (:mod:`distill.migration`) before parsing, then parse."""
        import sys

        from distill.migration import check_argv

        argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        messages = check_argv([str(a) for a in argv])
        if messages:
            parser.error("\n".join(messages))
        super().parse_arguments(parser, args)

    def _run_subcommand(self, subcommand: str) -> None:
        """Run the subcommand; a run refused before its first batch (a data/network mismatch found in ``setup``, a
        checkpoint of another method) leaves no new run folder behind (:mod:`distill.run_folder`)."""
        if subcommand not in RUN_SUBCOMMANDS:
            super()._run_subcommand(subcommand)
            return
        from distill.run_folder import RunFolders

        folders = RunFolders.before(self.trainer)
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            try:
                folders.discard(self.trainer)
            except OSError as error:  # never hide the refusal behind a clean-up problem
                rank_zero_warn(f"could not remove the refused run's folder: {error}")
            raise

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """Lightning's trainer plus :class:`distill.callbacks.RNGStateCallback` when the config has none, so every
        checkpoint can resume with its RNG state; and, in place of the model summary and progress bar Lightning
        adds when the config names none, :class:`~distill.callbacks.DistillModelSummary` (no column of zero
        FLOPs beside the MAC report) and a bar that counts steps on step-bounded runs
        (:class:`~distill.callbacks.StepRichProgressBar` or :class:`~distill.callbacks.StepTQDMProgressBar`,
        whichever kind Lightning chose) on a terminal, or plain progress lines
        (:class:`~distill.callbacks.PlainProgressBar`) when stdout is a file or a pipe. Without a logger and a
        ``default_root_dir``, no ``config.yaml`` is saved (Lightning would write it into the working directory)."""
        from lightning.pytorch.callbacks import ModelSummary, ProgressBar, RichProgressBar

        from distill.callbacks import (
            DistillModelSummary,
            PlainProgressBar,
            RNGStateCallback,
            StepRichProgressBar,
            StepTQDMProgressBar,
        )
        from distill.console import interactive

        named = self._named_callbacks()
        trainer = super().instantiate_trainer(**kwargs)
        if not trainer.loggers and Path(trainer.default_root_dir).resolve() == Path.cwd().resolve():
            # no logger and no root folder given: no run folder, so no config.yaml dropped into the working directory
            trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, SaveConfigCallback)]
        if not any(isinstance(c, RNGStateCallback) for c in trainer.callbacks):
            trainer.callbacks.append(RNGStateCallback())
        for i, callback in enumerate(trainer.callbacks):
            if isinstance(callback, ModelSummary) and not any(isinstance(c, ModelSummary) for c in named):
                trainer.callbacks[i] = DistillModelSummary()
            elif isinstance(callback, ProgressBar) and not any(isinstance(c, ProgressBar) for c in named):
                if not interactive():
                    trainer.callbacks[i] = PlainProgressBar()
                elif isinstance(callback, RichProgressBar):
                    trainer.callbacks[i] = StepRichProgressBar()
                else:
                    trainer.callbacks[i] = StepTQDMProgressBar()
        return trainer

    def _named_callbacks(self) -> list:
        """The callbacks the config (and ``trainer_defaults``) name, instantiated: any other model summary or
        progress bar in the trainer is Lightning's default."""
        key = f"{self.subcommand}.trainer.callbacks" if self.subcommand else "trainer.callbacks"
        named: list = []
        for value in (self.config_init.get(key), self.trainer_defaults.get("callbacks")):
            if isinstance(value, list):
                named += value
            elif value is not None:
                named.append(value)
        return named

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            **LightningCLI.subcommands(),
            "flops": {"model", "datamodule"},
            "export": {"model", "datamodule"},
            "precompute": {"model", "datamodule"},
        }


def module_from_config(config: Path) -> L.LightningModule:
    """Instantiate a run's LightningModule from its saved ``config.yaml`` (fit-time keys dropped)."""
    import tempfile

    import yaml

    from distill.migration import check_argv

    messages = check_argv(
        ["-c", str(config)]
    )  # a run saved before the guidance migration: say what to change
    if messages:
        raise ValueError("\n".join(messages))
    saved = yaml.safe_load(Path(config).read_text())
    for key in ("ckpt_path", "weights_only"):  # fit-time keys; this parser builds the objects only
        saved.pop(key, None)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(saved, handle)
    cli = DistillCLI(args=["-c", handle.name, "--trainer.logger=false"], run=False)
    Path(handle.name).unlink()
    return cli.model


def module_from_run(config: Path, ckpt: Path) -> tuple[L.LightningModule, dict]:
    """The run's LightningModule from its saved config with the checkpoint's weights loaded (weights only; the
    method checks the keys and fills in the teacher)."""
    from distill.export import load_checkpoint

    module = module_from_config(config)
    return module, load_checkpoint(module, ckpt)
