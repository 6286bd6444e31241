"""Collators: lists of dataset items → batches. Looked up by name in `COLLATORS`.

`lm` pads inputs with the pad id and labels with -100 (ignored by the loss), `classification`
pads inputs and adds an attention mask, `vision` stacks images, `default` is torch's own.
"""

from __future__ import annotations

from functools import partial

import torch
from torch.utils.data import default_collate

from tengine.registry import Registry

COLLATORS: Registry = Registry("collator", "data.collator")
IGNORE_INDEX = -100
TASK_COLLATOR = {"language_modeling": "lm", "classification": "classification",
                 "multilabel": "classification", "vision_classification": "vision",
                 "segmentation": "vision"}


def _labels(items: list[dict]) -> torch.Tensor:
    """Class ids stack to [B]; per-pixel masks or multi-hot vectors stack to [B, ...]."""
    labels = [i["labels"] for i in items]
    return torch.stack(labels) if torch.is_tensor(labels[0]) else torch.as_tensor(labels)


def _pad(seqs: list[torch.Tensor], value: int) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=value)


@COLLATORS.register("lm")
def lm_collate(items: list[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    return {"input_ids": _pad([i["input_ids"] for i in items], pad_id),
            "labels": _pad([i["labels"] for i in items], IGNORE_INDEX)}


@COLLATORS.register("classification")
def classification_collate(items: list[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    ids = [i["input_ids"] for i in items]
    mask = _pad([torch.ones(len(x), dtype=torch.long) for x in ids], 0)
    return {"input_ids": _pad(ids, pad_id), "attention_mask": mask,
            "labels": _labels(items)}


@COLLATORS.register("vision")
def vision_collate(items: list[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.stack([i["pixel_values"] for i in items]),
            "labels": _labels(items)}


@COLLATORS.register("default")
def default_collator(items: list[dict], pad_id: int = 0):
    return default_collate(items)


def build_collator(name: str | None, task_type: str, pad_id: int):
    return partial(COLLATORS.get(name or TASK_COLLATOR[task_type]), pad_id=pad_id)
