"""The ``distill`` command: LightningCLI (fit/validate/test) with subclass modes for model and data."""

from __future__ import annotations

import warnings

import lightning as L
from lightning.pytorch.cli import LightningCLI

# Frozen teachers, EMA and target copies are in eval mode by design.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


class DistillCLI(LightningCLI):
    """``distill fit|validate|test -c CONFIG``; any model or data class is chosen by ``class_path``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("parser_kwargs", {"parser_mode": "yaml"})
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(L.LightningModule, L.LightningDataModule, *args, **kwargs)


def main(args: list[str] | None = None) -> None:
    """Console entry point; ``args`` lets tests drive it in-process."""
    DistillCLI(args=args)


if __name__ == "__main__":
    main()
