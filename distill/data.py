"""LightningDataModules. The embedded default: sklearn's 1,797 real 8x8 handwritten digits (UCI)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from distill.digits import load_digits_tensors, stratified_split

DIGITS_CLASSES = 10


class GlobalBatchSampler(DistributedSampler):
    """Seeded shuffling in global batches, split across processes, resumable mid-epoch.

    Each epoch is one permutation of the dataset seeded by ``(seed, epoch)``, cut into global batches of
    ``batch_size x world_size x accumulate`` samples (the incomplete last one dropped). Within a global batch,
    micro-batch ``m`` of rank ``r`` gets the ``batch_size`` samples at ``(m x world_size + r) x batch_size``: the
    order :func:`distill.rng.global_sample_indices` numbers them in. So one process with batch 64 and two with
    batch 32 each see the same 64 samples per step. ``skip_samples`` starts the epoch after that many global
    samples (a resumed run's position, see :class:`ResumableDataLoader`).

    A ``DistributedSampler`` subclass, so Lightning uses it as it is instead of wrapping it.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        accumulate: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        super().__init__(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        if batch_size < 1 or accumulate < 1:
            raise ValueError(f"batch_size and accumulate must be >= 1, got {batch_size} and {accumulate}")
        self.batch_size, self.world_size, self.accumulate = batch_size, world_size, accumulate
        self.global_batch = batch_size * world_size * accumulate
        self.num_global_batches = len(dataset) // self.global_batch  # type: ignore[arg-type]
        if self.num_global_batches == 0:
            raise ValueError(
                f"the dataset has {len(dataset)} samples, fewer than one global batch of {self.global_batch} "  # type: ignore[arg-type]
                f"(batch_size {batch_size} x {world_size} processes x accumulate {accumulate}): "
                "lower batch_size or add data"
            )
        self.skip_samples = 0

    def __len__(self) -> int:
        return self.num_global_batches * self.accumulate * self.batch_size

    def order(self) -> torch.Tensor:
        """This epoch's global order of dataset indices."""
        n = len(self.dataset)  # type: ignore[arg-type]
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch))

    def __iter__(self) -> Iterator[int]:
        order = self.order()[: self.num_global_batches * self.global_batch]
        per_rank = order.view(-1, self.accumulate, self.world_size, self.batch_size)[:, :, self.rank]
        mine = per_rank.reshape(-1)
        start = self.skip_samples // (self.world_size * self.batch_size) * self.batch_size
        self.skip_samples = 0  # only the resumed epoch starts late
        return iter(mine[start:].tolist())


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`GlobalBatchSampler` whose position Lightning checkpoints.

    ``state_dict()`` (saved by Lightning's fit loop in every checkpoint) records the epoch and how many global
    samples of it the training step has consumed; ``load_state_dict()`` makes the next epoch iteration start
    there. The position is counted in global samples, so a run may resume on a different number of processes
    as long as the global batch is unchanged (otherwise: a clear error).
    """

    def __init__(self, dataset: Dataset, *, sampler: GlobalBatchSampler, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=sampler.batch_size, sampler=sampler, drop_last=True, **kwargs)
        self._epoch_started = 0
        self._consumed = 0  # global samples of the current epoch handed to the training step
        self._resume: dict[str, int] | None = None

    def __iter__(self):  # type: ignore[override]
        sampler: GlobalBatchSampler = self.sampler  # type: ignore[assignment]
        self._epoch_started = sampler.epoch
        self._consumed = 0
        if self._resume is not None and self._resume["epoch"] == sampler.epoch:
            self._consumed = sampler.skip_samples = self._resume["samples"]
        self._resume = None
        step = sampler.world_size * sampler.batch_size
        for batch in super().__iter__():
            self._consumed += step
            yield batch

    def state_dict(self) -> dict[str, int]:
        sampler: GlobalBatchSampler = self.sampler  # type: ignore[assignment]
        return {
            "epoch": self._epoch_started,
            "samples": self._consumed,
            "global_batch": sampler.global_batch,
            "dataset_size": len(sampler.dataset),  # type: ignore[arg-type]
            "seed": sampler.seed,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler: GlobalBatchSampler = self.sampler  # type: ignore[assignment]
        now = {
            "global_batch": sampler.global_batch,
            "dataset_size": len(sampler.dataset),
            "seed": sampler.seed,
        }  # type: ignore[arg-type]
        changed = {k: (state.get(k), v) for k, v in now.items() if state.get(k) != v}
        if changed:
            detail = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
            raise ValueError(
                f"cannot restore the data position: {detail} since the checkpoint. Resume with the same "
                "dataset, shuffle seed and global batch (batch_size x devices x accumulate_grad_batches), or "
                "start a new run from the weights (load them with init_args instead of --ckpt_path)."
            )
        self._resume = {"epoch": int(state["epoch"]), "samples": int(state["samples"])}


def resumable_loader(
    dataset: Dataset, *, batch_size: int, seed: int, trainer: L.Trainer | None = None, **kwargs: Any
) -> ResumableDataLoader:
    """The training loader: :class:`GlobalBatchSampler` over the trainer's processes and accumulation."""
    world, rank, accumulate = 1, 0, 1
    if trainer is not None:
        world, rank = trainer.world_size, trainer.global_rank
        accumulate = max(int(trainer.accumulate_grad_batches), 1)
    sampler = GlobalBatchSampler(
        dataset, batch_size=batch_size, world_size=world, rank=rank, accumulate=accumulate, seed=seed
    )
    return ResumableDataLoader(dataset, sampler=sampler, **kwargs)


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
        return resumable_loader(
            self.train_set,
            batch_size=self.batch_size,
            seed=self.shuffle_seed,
            trainer=self.trainer,
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

    The generator draws sample i's noise from (seed, i) alone (``teachers.sampling.per_sample_noise``), so results
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
