"""Data factories for `data.source: tests.data.user_data:NAME` (tests/data/test_user_source.py)."""

from __future__ import annotations

import torch

from tengine.data import DataBundle
from tengine.data.datasets import PackedLMDataset


def _stream(n: int, seed: int) -> torch.Tensor:
    """A cyclic walk over 16 symbols: easy to learn."""
    steps = torch.randint(1, 3, (n,), generator=torch.Generator().manual_seed(seed))
    return torch.cumsum(steps, 0) % 16


def bundle(data, task) -> DataBundle:
    return DataBundle(PackedLMDataset(_stream(20_000, 0), data.seq_len),
                      PackedLMDataset(_stream(2_000, 1), data.seq_len), vocab_size=16,
                      info={"task": task.type})


def pair(seq_len: int):
    return PackedLMDataset(_stream(20_000, 0), seq_len), PackedLMDataset(_stream(2_000, 1), seq_len)


def wrong():
    return [1, 2, 3]


class Tuples(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        return torch.zeros(3), 0


def tuples():
    return Tuples(), Tuples()


def needs_foo(data, foo):
    raise AssertionError("never called")
