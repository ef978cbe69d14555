"""Keyed training randomness, the global-batch sampler, resumable data position and the RNG-state callback."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from distill.callbacks import RNGStateCallback
from distill.data import GlobalBatchSampler, ResumableDataLoader, resumable_loader
from distill.rng import GeneratorRandom, KeyedRandom, global_sample_indices, sample_seed


def _draw(rng, b):
    return rng.randint(1000, b), rng.rand(b), rng.randn((b, 1, 4, 4))


def test_sample_seed_is_a_stable_63_bit_function_of_seed_step_index():
    a = sample_seed(seed=0, step=5, index=3)
    assert a == sample_seed(seed=0, step=5, index=3)
    assert 0 <= a < 2**63
    others = {
        sample_seed(seed=s, step=t, index=i) for s, t, i in [(1, 5, 3), (0, 6, 3), (0, 5, 4), (0, 3, 5)]
    }
    assert a not in others and len(others) == 4


def test_keyed_rows_depend_only_on_their_own_key_not_on_the_batch_split():
    whole = _draw(KeyedRandom(seed=7, step=11, indices=range(8)), 8)
    halves = [_draw(KeyedRandom(seed=7, step=11, indices=range(lo, lo + 4)), 4) for lo in (0, 4)]
    for full, a, b in zip(whole, *halves, strict=True):
        assert torch.equal(full, torch.cat([a, b]))
    # another step or seed gives other numbers
    assert not torch.equal(whole[2], _draw(KeyedRandom(seed=7, step=12, indices=range(8)), 8)[2])
    assert not torch.equal(whole[2], _draw(KeyedRandom(seed=8, step=11, indices=range(8)), 8)[2])
    # the draws have the right distributions' ranges and types
    assert whole[0].dtype == torch.long and int(whole[0].min()) >= 0 and int(whole[0].max()) < 1000
    assert float(whole[1].min()) >= 0.0 and float(whole[1].max()) < 1.0


def test_keyed_random_rejects_a_batch_of_another_size():
    rng = KeyedRandom(seed=0, step=0, indices=[0, 1])
    with pytest.raises(ValueError, match="draws for 2 samples, asked for 3"):
        rng.rand(3)


def test_generator_random_matches_torch_calls_on_the_same_generator():
    got = _draw(GeneratorRandom(torch.Generator().manual_seed(3)), 5)
    gen = torch.Generator().manual_seed(3)
    want = (
        torch.randint(0, 1000, (5,), generator=gen),
        torch.rand(5, generator=gen),
        torch.randn((5, 1, 4, 4), generator=gen),
    )
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


def test_global_indices_order_micro_batch_then_rank_then_position():
    assert global_sample_indices(batch_size=2, rank=1, world_size=2, micro_batch=0) == [2, 3]
    assert global_sample_indices(batch_size=2, rank=0, world_size=2, micro_batch=1) == [4, 5]
    with pytest.raises(ValueError, match="rank"):
        global_sample_indices(batch_size=2, rank=2, world_size=2)


def _dataset(n=50):
    return TensorDataset(torch.arange(n))


def _batches(sampler, batch_size):
    order = list(iter(sampler))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def test_two_ranks_see_the_same_global_batches_as_one_process():
    data = _dataset()
    one = GlobalBatchSampler(data, batch_size=8, seed=3)
    ranks = [GlobalBatchSampler(data, batch_size=4, world_size=2, rank=r, seed=3) for r in range(2)]
    accum = GlobalBatchSampler(data, batch_size=4, accumulate=2, seed=3)
    for epoch in (0, 1):
        for s in (one, accum, *ranks):
            s.set_epoch(epoch)
        single = _batches(one, 8)
        split = [a + b for a, b in zip(_batches(ranks[0], 4), _batches(ranks[1], 4), strict=True)]
        micro = _batches(accum, 4)
        assert single == split == [micro[i] + micro[i + 1] for i in range(0, len(micro), 2)]
        assert len(single) == 50 // 8 and len(one) == 48
    one.set_epoch(0)
    first = list(iter(one))
    one.set_epoch(1)
    assert first != list(iter(one)), "each epoch must reshuffle"
    assert sorted(first) == sorted(set(first))


def test_too_small_a_dataset_for_one_global_batch_is_refused():
    with pytest.raises(ValueError, match="fewer than one global batch of 64"):
        GlobalBatchSampler(_dataset(40), batch_size=32, world_size=2)


def _loader(world=1, rank=0, batch=8):
    sampler = GlobalBatchSampler(_dataset(), batch_size=batch, world_size=world, rank=rank, seed=1)
    return ResumableDataLoader(_dataset(), sampler=sampler)


def test_loader_state_resumes_mid_epoch_where_it_stopped():
    reference = _loader()
    reference.sampler.set_epoch(2)
    want = [b[0].tolist() for b in reference]

    interrupted = _loader()
    interrupted.sampler.set_epoch(2)
    it = iter(interrupted)
    seen = [next(it)[0].tolist() for _ in range(3)]
    state = interrupted.state_dict()
    assert state["epoch"] == 2 and state["samples"] == 24

    resumed = _loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    rest = [b[0].tolist() for b in resumed]
    assert seen + rest == want
    assert len(resumed) == len(reference), "the epoch length Lightning sees stays the full epoch"
    # the next epoch starts from its beginning
    resumed.sampler.set_epoch(3)
    assert len([b for b in resumed]) == len(want)


def test_a_position_resumes_on_another_process_count_with_the_same_global_batch():
    one = _loader(batch=8)
    one.sampler.set_epoch(0)
    it = iter(one)
    for _ in range(2):
        next(it)
    state = one.state_dict()
    want = [b[0].tolist() for b in it]
    parts = []
    for rank in range(2):
        loader = _loader(world=2, rank=rank, batch=4)
        loader.load_state_dict(state)
        loader.sampler.set_epoch(0)
        parts.append([b[0].tolist() for b in loader])
    assert [a + b for a, b in zip(*parts, strict=True)] == want


def test_a_changed_global_batch_cannot_restore_the_position():
    state = _loader(batch=8).state_dict()
    with pytest.raises(
        ValueError, match=r"global_batch 8 -> 16.*same dataset, shuffle seed and global batch"
    ):
        _loader(batch=16).load_state_dict(state)


def test_resumable_loader_defaults_to_one_process():
    loader = resumable_loader(_dataset(), batch_size=5, seed=0)
    assert isinstance(loader.sampler, GlobalBatchSampler) and len(loader) == 10


def test_rng_state_round_trips_through_a_weights_only_checkpoint():
    callback = RNGStateCallback()
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    saved = callback.state_dict()
    want = (torch.rand(3), np.random.rand(3), random.random())
    buffer = io.BytesIO()
    torch.save({"rng": saved}, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=True)["rng"]
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    callback.load_state_dict(restored)

    class _Trainer:
        world_size, global_rank = 1, 0

    callback.on_train_start(_Trainer(), None)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
