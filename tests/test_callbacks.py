"""The model summary and progress bars the ``distill`` CLI installs in place of Lightning's defaults."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from distill.callbacks import DistillModelSummary, StepRichProgressBar, StepTQDMProgressBar, step_description


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
    options = {"enable_progress_bar": False, **options}
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=callbacks, **options
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


def test_step_description_only_when_max_steps_alone_bounds_the_run():
    quiet = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert step_description(L.Trainer(max_steps=7, **quiet)) == "Step 0/7 (epoch 0)"
    assert step_description(L.Trainer(max_steps=7, max_epochs=-1, **quiet)) == "Step 0/7 (epoch 0)"
    assert step_description(L.Trainer(max_steps=7, max_epochs=3, **quiet)) is None
    assert step_description(L.Trainer(max_epochs=-1, **quiet)) is None


class _Descriptions(L.Callback):
    """Records the training bar's description after each batch (it runs after the bar, listed after it)."""

    def __init__(self, bar) -> None:
        self.bar = bar
        self.seen: list[str] = []

    def on_train_batch_end(self, *args) -> None:
        if isinstance(self.bar, StepRichProgressBar):
            text = self.bar.progress.tasks[self.bar.train_progress_bar_id].description
        else:
            text = self.bar.train_progress_bar.desc.removesuffix(": ")
        self.seen.append(text.strip())


@pytest.mark.parametrize("bar_class", [StepRichProgressBar, StepTQDMProgressBar])
def test_progress_bar_counts_steps_on_step_bounded_runs(bar_class):
    bar = bar_class()
    descriptions = _Descriptions(bar)
    _fit(_Tiny(), [bar, descriptions], max_steps=3, enable_progress_bar=True, enable_model_summary=False)
    # 2 batches per epoch; Lightning's Rich bar read "Epoch 1/-2" on the last one
    assert descriptions.seen == ["Step 1/3 (epoch 0)", "Step 2/3 (epoch 0)", "Step 3/3 (epoch 1)"]

    bar = bar_class()
    descriptions = _Descriptions(bar)
    _fit(_Tiny(), [bar, descriptions], max_epochs=2, enable_progress_bar=True, enable_model_summary=False)
    last = "Epoch 1/1" if bar_class is StepRichProgressBar else "Epoch 1"
    assert descriptions.seen[-1] == last  # epoch-bounded runs keep Lightning's description
