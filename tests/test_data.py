"""The digits data: real sklearn digits, fixed stratified split, range and shape."""

from __future__ import annotations

import pytest
import torch

from distill.data import DigitsDataModule, load_digits_tensors


def test_all_real_digits_in_range():
    images, labels = load_digits_tensors(image_size=16)
    assert images.shape == (1797, 1, 16, 16)
    assert images.min() >= -1 and images.max() <= 1
    assert images.min() == -1 and images.max() > 0.9
    assert sorted(labels.unique().tolist()) == list(range(10))


def test_split_is_fixed_stratified_and_disjoint():
    dm = DigitsDataModule()
    dm.setup("fit")
    train_x, train_y = dm.train_set.tensors
    held_x, held_y = dm.heldout_set.tensors
    assert len(train_y) == 1437 and len(held_y) == 360
    counts = torch.bincount(held_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class
    # disjoint: no held-out image equals a training image of the same index set
    again = DigitsDataModule()
    again.setup("fit")
    assert torch.equal(again.heldout_set.tensors[0], held_x)  # the same split every time
    other = DigitsDataModule(split_seed=1)
    other.setup("fit")
    assert not torch.equal(other.heldout_set.tensors[1], held_y)
    flat_train = {tuple(x.flatten().tolist()) for x in train_x[:200]}
    assert not any(tuple(x.flatten().tolist()) in flat_train for x in held_x[:50])


def test_loaders_and_native_size():
    dm = DigitsDataModule(image_size=8, batch_size=32)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and y.dtype == torch.long
    assert len(dm.train_dataloader()) == 1437 // 32
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape[0] == 256


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 4}, "image_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_heldout": 5}, "num_heldout"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)
