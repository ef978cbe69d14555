"""The model summary the ``distill`` CLI installs in place of Lightning's default."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from distill.callbacks import DistillModelSummary


class _Tiny(L.LightningModule):
    def __init__(self, example: bool = False) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3, 1)
        if example:
            self.example_input_array = torch.zeros(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return self(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4, 3)), batch_size=2)


class _Log(logging.Handler):
    """Lightning's console output (its loggers stop at ``lightning.pytorch``, out of reach of caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += record.getMessage() + "\n"

    def __enter__(self) -> _Log:
        logging.getLogger("lightning.pytorch").addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("lightning.pytorch").removeHandler(self)


def _fit(module: L.LightningModule, callbacks: list, **options) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=callbacks,
        **options,
    )
    trainer.fit(module)
    return trainer


@pytest.mark.parametrize("example", [False, True])
def test_model_summary_shows_flops_only_when_lightning_measured_them(example):
    with _Log() as log:
        _fit(_Tiny(example), [DistillModelSummary()], max_steps=1)
    assert "Total params" in log.text and "net  | Linear" in log.text
    if example:  # Lightning's own table: 2 x (2 x 3) multiply-adds of the linear layer on the example input
        assert "FLOPs" in log.text and "12        Total Flops" in log.text
    else:
        assert "FLOPs" not in log.text and "Flops" not in log.text
