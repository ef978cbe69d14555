"""Training randomness keyed on (seed, global step, sample index).

Each sample's noise, timestep, guidance scale and label dropout come from its own generator, seeded from
``(seed, step, index)`` where ``index`` is the sample's position in the *global* batch (all processes and
gradient-accumulation micro-batches together). One process with batch 64 and two processes with batch 32 each
therefore draw exactly the same numbers for the same step, and a resumed run draws what the uninterrupted run
would have drawn: results depend on the seed and the global batch, not on the process count or on the global
RNG state.

:class:`KeyedRandom` and :class:`GeneratorRandom` share one interface (``randn``/``rand``/``randint``), so the
methods' loss code takes either: keyed draws for training, one seeded generator for validation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

__all__ = ["GeneratorRandom", "KeyedRandom", "global_sample_indices", "sample_seed"]


def sample_seed(*, seed: int, step: int, index: int) -> int:
    """A 63-bit generator seed that depends only on (seed, step, index) (BLAKE2b of the three integers)."""
    digest = hashlib.blake2b(f"{int(seed)}:{int(step)}:{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def global_sample_indices(
    *, batch_size: int, rank: int = 0, world_size: int = 1, micro_batch: int = 0
) -> list[int]:
    """Positions in the global batch of one process's micro-batch.

    The global batch of a step is ``accumulate x world_size x batch_size`` samples, ordered by micro-batch, then
    rank, then position (the order :class:`distill.data.GlobalBatchSampler` hands out data in).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    start = (micro_batch * world_size + rank) * batch_size
    return list(range(start, start + batch_size))


class KeyedRandom:
    """Random draws for a batch whose row i depends only on ``(seed, step, indices[i])``.

    Draws are taken in call order from each row's generator (so the code that draws must call in a fixed order)
    on the CPU, then moved to ``device``: identical on every device type and process.
    """

    def __init__(
        self, *, seed: int, step: int, indices: Sequence[int], device: torch.device | str = "cpu"
    ) -> None:
        if len(indices) == 0:
            raise ValueError("indices must not be empty")
        self.device = torch.device(device)
        self.generators = [
            torch.Generator().manual_seed(sample_seed(seed=seed, step=step, index=i)) for i in indices
        ]

    def __len__(self) -> int:
        return len(self.generators)

    def _check(self, batch: int) -> None:
        if batch != len(self.generators):
            raise ValueError(f"this KeyedRandom draws for {len(self.generators)} samples, asked for {batch}")

    def randn(self, shape: Sequence[int], *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal of ``shape`` (batch first)."""
        self._check(shape[0])
        rows = [torch.randn(tuple(shape[1:]), generator=g) for g in self.generators]
        return torch.stack(rows).to(device=self.device, dtype=dtype)

    def rand(self, batch: int) -> torch.Tensor:
        """One uniform [0, 1) number per sample."""
        self._check(batch)
        return torch.cat([torch.rand(1, generator=g) for g in self.generators]).to(self.device)

    def randint(self, high: int, batch: int) -> torch.Tensor:
        """One integer in [0, high) per sample."""
        self._check(batch)
        return torch.cat([torch.randint(0, high, (1,), generator=g) for g in self.generators]).to(self.device)


class GeneratorRandom:
    """The same interface over one ``torch.Generator`` (or the global RNG when ``generator`` is None)."""

    def __init__(
        self, generator: torch.Generator | None = None, *, device: torch.device | str = "cpu"
    ) -> None:
        self.generator = generator
        self.device = torch.device(device)

    def _gen_device(self) -> torch.device:
        return self.generator.device if self.generator is not None else self.device

    def randn(self, shape: Sequence[int], *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        out = torch.randn(tuple(shape), generator=self.generator, device=self._gen_device(), dtype=dtype)
        return out.to(self.device)

    def rand(self, batch: int) -> torch.Tensor:
        return torch.rand(batch, generator=self.generator, device=self._gen_device()).to(self.device)

    def randint(self, high: int, batch: int) -> torch.Tensor:
        out = torch.randint(0, high, (batch,), generator=self.generator, device=self._gen_device())
        return out.to(self.device)
