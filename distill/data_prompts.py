"""What a text-to-image evaluation generates: prompts from a file, as (seed, index, prompt) batches.

Used by ``distill test`` with :class:`distill.methods.evaluation.GenerativeEvaluation`; sample ``i`` of seed ``s``
draws its noise from ``(s, i)`` alone (``teachers.sampling.per_sample_noise``), so results do not depend on the
batch size or the number of processes.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line (surrounding whitespace stripped, blank lines skipped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"prompt_file={str(path)!r} does not exist: pass a text file with one prompt per line "
            "(data.init_args.prompt_file)"
        )
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(
            f"prompt_file={str(path)!r} holds no prompts (only blank lines): write one prompt per line"
        )
    return prompts


class PromptDataset(Dataset):
    """Rows (seed, index, prompt): every seed over the same ``num_samples`` prompts."""

    def __init__(self, prompts: list[str], num_samples: int, seeds: list[int]) -> None:
        self.prompts, self.num_samples, self.seeds = prompts, num_samples, seeds

    def __len__(self) -> int:
        return self.num_samples * len(self.seeds)

    def __getitem__(self, row: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        seed, index = self.seeds[row // self.num_samples], row % self.num_samples
        return torch.tensor(seed), torch.tensor(index), self.prompts[index % len(self.prompts)]


class PromptDataModule(L.LightningDataModule):
    """Prompts to generate from, for ``distill test`` of a text-to-image teacher or student.

    Args:
        prompt_file: a text file with one prompt per line (blank lines skipped).
        num_samples: images per seed (None: one per prompt); the prompts are taken in order, cycling when there
            are more samples than prompts.
        seeds: the evaluation seeds (every number is reported as mean ± std over them).
        batch_size: prompts per generation batch.
    """

    def __init__(
        self,
        prompt_file: str | Path,
        num_samples: int | None = None,
        seeds: list[int] | None = None,
        batch_size: int = 16,
    ) -> None:
        super().__init__()
        seeds = [0] if seeds is None else list(seeds)
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct seeds, got {seeds}")
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be >= 1 (or null: one per prompt), got {num_samples}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.prompt_file = Path(prompt_file).expanduser()
        self.prompts = read_prompts(self.prompt_file)
        self.num_samples = len(self.prompts) if num_samples is None else num_samples
        self.seeds, self.batch_size = seeds, batch_size

    def dataset(self) -> PromptDataset:
        return PromptDataset(self.prompts, self.num_samples, self.seeds)

    def _loader(self) -> DataLoader:
        return DataLoader(self.dataset(), batch_size=self.batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()
