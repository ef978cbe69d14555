"""LightningDataModules. The embedded default: sklearn's 1,797 real 8x8 handwritten digits (UCI)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

DIGITS_CLASSES = 10


def load_digits_tensors(*, image_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as float images in [-1, 1] of shape (N, 1, image_size, image_size), and labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div(16.0).unsqueeze(1)  # 0..16 -> [0, 1]
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.clamp(0.0, 1.0).mul(2.0).sub(1.0)
    return images, torch.from_numpy(bunch.target).long()


def stratified_split(
    *, labels: torch.Tensor, num_heldout: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, held-out) of a seeded split stratified by label."""
    from sklearn.model_selection import train_test_split

    idx = torch.arange(len(labels)).numpy()
    train, held = train_test_split(idx, test_size=num_heldout, random_state=seed, stratify=labels.numpy())
    return torch.from_numpy(train).sort().values, torch.from_numpy(held).sort().values


class DigitsDataModule(L.LightningDataModule):
    """sklearn digits upsampled to ``image_size`` in [-1, 1], with a fixed seeded stratified split.

    Batches are ``(images, labels)`` with labels in 0..9; the null class for classifier-free guidance
    (label 10) is applied by the method (label dropout), not here.

    Args:
        image_size: side of the square images (8 is the native resolution; 16 is the default).
        batch_size: training batch size (validation/test use ``eval_batch_size``).
        num_heldout: size of the held-out split (360 of 1,797, 20%).
        split_seed: seed of the stratified split; fixed so every run evaluates on the same digits.
        shuffle_seed: seed of the training order.
    """

    num_classes = DIGITS_CLASSES

    def __init__(
        self,
        image_size: int = 16,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_heldout: int = 360,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 (the digits' native size), got {image_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 10 <= num_heldout <= 1797 - 10:
            raise ValueError(
                f"num_heldout must leave both splits at least one digit per class, got {num_heldout}"
            )
        self.save_hyperparameters()
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_heldout = num_heldout
        self.split_seed = split_seed
        self.shuffle_seed = shuffle_seed
        self.num_workers = num_workers
        self.train_set: TensorDataset | None = None
        self.heldout_set: TensorDataset | None = None

    @property
    def channels(self) -> int:
        return 1

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, labels = load_digits_tensors(image_size=self.image_size)
        train, held = stratified_split(labels=labels, num_heldout=self.num_heldout, seed=self.split_seed)
        self.train_set = TensorDataset(images[train], labels[train])
        self.heldout_set = TensorDataset(images[held], labels[held])

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        generator = torch.Generator().manual_seed(self.shuffle_seed)
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            generator=generator,
            num_workers=self.num_workers,
        )

    def _eval_loader(self) -> DataLoader:
        assert self.heldout_set is not None, "call setup() first"
        return DataLoader(
            self.heldout_set, batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader()


class GenerationDataModule(L.LightningDataModule):
    """What an evaluation generates: ``num_samples`` per seed with balanced labels, as (seed, index, label).

    The generator draws sample i's noise from (seed, i) alone (``distill.sampling.per_sample_noise``), so results
    do not depend on batch size or process count. Used by ``distill test`` with ``GenerativeEvaluation``.
    """

    def __init__(
        self,
        num_samples: int = 2000,
        seeds: list[int] | None = None,
        num_classes: int | None = 10,
        batch_size: int = 250,
    ) -> None:
        super().__init__()
        seeds = [0, 1, 2] if seeds is None else list(seeds)
        if num_samples < 1 or not seeds:
            raise ValueError(f"need num_samples >= 1 and at least one seed, got {num_samples} and {seeds}")
        if num_classes is not None and num_samples % num_classes:
            raise ValueError(
                f"num_samples={num_samples} must be a multiple of num_classes={num_classes} "
                "so the labels are balanced"
            )
        self.num_samples, self.seeds, self.num_classes, self.batch_size = (
            num_samples,
            seeds,
            num_classes,
            batch_size,
        )

    def _loader(self) -> DataLoader:
        seed_col = torch.tensor(self.seeds).repeat_interleave(self.num_samples)
        idx_col = torch.arange(self.num_samples).repeat(len(self.seeds))
        labels = idx_col % self.num_classes if self.num_classes else torch.full_like(idx_col, -1)
        return DataLoader(TensorDataset(seed_col, idx_col, labels), batch_size=self.batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()
