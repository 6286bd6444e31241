"""DataLoaders that are distributed-aware, reshuffle every epoch and resume mid-epoch.

The order of an epoch is a pure function of (seed, epoch), so no RNG state is needed to
reproduce it; resuming sets `start_batch` and the sampler skips the batches already consumed.
Each rank takes a strided slice of the (padded) permutation, like DistributedSampler.
Validation is not padded (`EvalSampler`): every item counts exactly once whatever the world
size, so a 1-rank evaluation of a 2-rank checkpoint gives the run's own `val_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ResumableSampler(Sampler[int]):
    def __init__(self, length: int, *, shuffle: bool, seed: int, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, batch_size: int = 1):
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.drop_last, self.batch_size = drop_last, batch_size
        self.epoch = 0
        self.start_batch = 0
        if drop_last:
            self.per_rank = length // world_size
        else:
            self.per_rank = math.ceil(length / world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def batches_per_epoch(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size
        return math.ceil(self.per_rank / self.batch_size)

    def _epoch_indices(self) -> torch.Tensor:
        """This rank's indices of the epoch as one int64 tensor (8 bytes an item: a Python list
        of 780K blocks would cost ~30 MB and seconds per epoch)."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=gen)
        else:
            order = torch.arange(self.length)
        total = self.per_rank * self.world_size
        order = order[:total] if self.drop_last else order.repeat(2)[:total]  # pad by wrapping
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        indices = self._epoch_indices()
        usable = self.batches_per_epoch() * self.batch_size if self.drop_last else len(indices)
        return _chunked(indices[self.start_batch * self.batch_size : usable])

    def __len__(self) -> int:
        n = self.batches_per_epoch() * self.batch_size if self.drop_last else self.per_rank
        return max(0, n - self.start_batch * self.batch_size)


def _chunked(indices: torch.Tensor, size: int = 65_536) -> Iterator[int]:
    """Python ints a chunk at a time: never a list of the whole epoch."""
    for start in range(0, len(indices), size):
        yield from indices[start:start + size].tolist()


class EvalSampler(Sampler[int]):
    """The first `limit` items in order (all when None); rank r takes items r, r+W, r+2W, ...

    No padding: ranks may hold one item less. `max_batches` is what the fullest rank (rank 0)
    runs; the evaluation loop makes the others run as many forwards (sharded backends gather
    weights in every forward) and drops those outputs.
    """

    def __init__(self, length: int, *, rank: int = 0, world_size: int = 1,
                 limit: int | None = None, batch_size: int = 1):
        self.n = min(length, limit) if limit is not None else length
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.max_batches = math.ceil(math.ceil(self.n / world_size) / batch_size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


class DataLoaderFactory:
    """Builds the train and validation loaders of one rank."""

    def __init__(self, *, micro_batch_size: int, collate: Callable, seed: int, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, pin_memory: bool = False):
        self.micro_batch_size, self.collate, self.seed = micro_batch_size, collate, seed
        self.rank, self.world_size = rank, world_size
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def _loader(self, dataset: Dataset, sampler: ResumableSampler | EvalSampler) -> DataLoader:
        return DataLoader(dataset, batch_size=self.micro_batch_size, sampler=sampler,
                          collate_fn=self.collate, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, drop_last=False,
                          persistent_workers=False,
                          # own generator: creating an iterator must not draw from the global
                          # torch RNG, or a resumed run's dropout stream would drift
                          generator=torch.Generator().manual_seed(self.seed))

    def train(self, dataset: Dataset) -> DataLoader:
        sampler = ResumableSampler(len(dataset), shuffle=True, seed=self.seed, rank=self.rank,
                                   world_size=self.world_size, drop_last=True,
                                   batch_size=self.micro_batch_size)
        return self._loader(dataset, sampler)

    def val(self, dataset: Dataset, max_batches: int | None = None) -> DataLoader:
        """`max_batches` caps the items at max_batches × micro_batch_size, counted over all
        ranks: the same items are evaluated whatever the world size."""
        limit = None if max_batches is None else max_batches * self.micro_batch_size
        sampler = EvalSampler(len(dataset), rank=self.rank, world_size=self.world_size,
                              limit=limit, batch_size=self.micro_batch_size)
        return self._loader(dataset, sampler)
