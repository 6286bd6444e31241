"""DataLoaders that are distributed-aware, reshuffle every epoch and resume mid-epoch.

The order of an epoch is a pure function of (seed, epoch), so no RNG state is needed to
reproduce it; resuming sets `start_batch` and the sampler skips the batches already consumed.
Each rank takes a strided slice of the (padded) permutation, like DistributedSampler.
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

    def _epoch_indices(self) -> list[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=gen).tolist()
        else:
            order = list(range(self.length))
        total = self.per_rank * self.world_size
        order = order[:total] if self.drop_last else (order * 2)[:total]  # pad by wrapping
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        indices = self._epoch_indices()
        usable = self.batches_per_epoch() * self.batch_size if self.drop_last else len(indices)
        return iter(indices[self.start_batch * self.batch_size : usable])

    def __len__(self) -> int:
        n = self.batches_per_epoch() * self.batch_size if self.drop_last else self.per_rank
        return max(0, n - self.start_batch * self.batch_size)


class DataLoaderFactory:
    """Builds the train and validation loaders of one rank."""

    def __init__(self, *, micro_batch_size: int, collate: Callable, seed: int, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, pin_memory: bool = False):
        self.micro_batch_size, self.collate, self.seed = micro_batch_size, collate, seed
        self.rank, self.world_size = rank, world_size
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def _loader(self, dataset: Dataset, sampler: ResumableSampler) -> DataLoader:
        return DataLoader(dataset, batch_size=self.micro_batch_size, sampler=sampler,
                          collate_fn=self.collate, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, drop_last=sampler.drop_last,
                          persistent_workers=False,
                          # own generator: creating an iterator must not draw from the global
                          # torch RNG, or a resumed run's dropout stream would drift
                          generator=torch.Generator().manual_seed(self.seed))

    def train(self, dataset: Dataset) -> DataLoader:
        sampler = ResumableSampler(len(dataset), shuffle=True, seed=self.seed, rank=self.rank,
                                   world_size=self.world_size, drop_last=True,
                                   batch_size=self.micro_batch_size)
        return self._loader(dataset, sampler)

    def val(self, dataset: Dataset) -> DataLoader:
        sampler = ResumableSampler(len(dataset), shuffle=False, seed=self.seed, rank=self.rank,
                                   world_size=self.world_size, drop_last=False,
                                   batch_size=self.micro_batch_size)
        return self._loader(dataset, sampler)
