"""The embedded default's data: sklearn's 1,797 handwritten digits (UCI) as tensors, and its fixed split.

Pure functions (no trainer): the data modules and the evaluator's real reference both read the digits here."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
