"""Map-style datasets that yield dicts of tensors, the one format collators and losses read.

LM items: {"input_ids": [T], "labels": [T]} (labels are the inputs shifted by one).
Classification items: {"input_ids": [L], "labels": int}; vision: {"pixel_values": [C,H,W], "labels": int}.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class PackedLMDataset(Dataset):
    """A token stream cut into blocks of `seq_len` (+1 for the shifted target), no padding.

    Block i covers tokens [i*T, i*T + T]; consecutive blocks share one token, so every token but
    the first is a target exactly once.
    """

    def __init__(self, tokens: torch.Tensor, seq_len: int):
        self.tokens = tokens.long()
        self.seq_len = seq_len
        self.n_blocks = (len(self.tokens) - 1) // seq_len

    def __len__(self) -> int:
        return self.n_blocks

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        block = self.tokens[i * self.seq_len : (i + 1) * self.seq_len + 1]
        return {"input_ids": block[:-1], "labels": block[1:]}


class SequenceLMDataset(Dataset):
    """One record per item (truncated to seq_len + 1); the `lm` collator pads with label -100."""

    def __init__(self, sequences: list[list[int]], seq_len: int):
        self.sequences = [s[: seq_len + 1] for s in sequences if len(s) >= 2]

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        seq = torch.tensor(self.sequences[i], dtype=torch.long)
        return {"input_ids": seq[:-1], "labels": seq[1:]}


class ClassificationDataset(Dataset):
    def __init__(self, sequences: list[list[int]], labels: list[int], seq_len: int):
        self.sequences = [s[:seq_len] or [0] for s in sequences]
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": torch.tensor(self.sequences[i], dtype=torch.long),
                "labels": int(self.labels[i])}


class ImageDataset(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.images[i], "labels": int(self.labels[i])}
