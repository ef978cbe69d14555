"""Training the digits evaluator (``configs/digits/classifier.yaml``)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from distill.classifier import DigitsClassifier
from distill.methods.optim import check_optimizer, configure
from distill.methods.ranges import check_probability


def augment(
    images: torch.Tensor, *, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random integer translations of up to ``max_shift`` pixels (background -1 fills the border)."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(images.device)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(images.device)
    idx_n = torch.arange(n, device=images.device).view(n, 1, 1)
    return padded[idx_n, 0, rows.view(n, h, 1), cols.view(n, 1, w)].unsqueeze(1)


class ClassifierTraining(L.LightningModule):
    """Supervised training of the digits evaluator (cross-entropy, shift augmentation, label smoothing)."""

    def __init__(
        self,
        classifier: DigitsClassifier,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        max_shift: int = 1,
        label_smoothing: float = 0.05,
    ) -> None:
        super().__init__()
        check_probability(label_smoothing, key="label_smoothing", example=0.05)
        check_optimizer(optimizer)
        self.classifier = classifier
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.max_shift = max_shift
        self.label_smoothing = label_smoothing

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.classifier(augment(images, max_shift=self.max_shift))
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        images, labels = batch
        logits = self.classifier(images)
        self.log(f"{stage}/loss", F.cross_entropy(logits, labels))
        self.log(f"{stage}/accuracy", (logits.argmax(1) == labels).float().mean(), prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        return configure(self.classifier.parameters(), self.optimizer, self.lr_scheduler, interval="epoch")
