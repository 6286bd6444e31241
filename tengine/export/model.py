"""The model an export starts from: a verified artifact's config and weights, rebuilt in fp32 on
CPU, with real validation examples from the run's own data to trace it with and check it on.

    exported = load(artifact)          # the model, its input names and dims, 8 val examples
    rebuilt = rebuild(bundle_dir)      # the same model from a bundle (config + safetensors)

The data is built exactly as the run built it (its config, its saved tokenizer), so the parity
cases are batches the model was validated on, not random tensors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tengine.config import TengineConfig, load_config
from tengine.errors import ConfigError

EXAMPLES = 8  # validation examples the parity cases are cut from (the largest batch size)
IMAGE_TASKS = ("vision_classification", "segmentation")


@dataclass
class Exported:
    cfg: TengineConfig
    model: nn.Module  # eval, fp32, CPU, the artifact's weights
    names: list[str]  # input names, in positional order
    batch: dict[str, torch.Tensor]  # ≤ EXAMPLES real validation examples (model inputs only)
    dims: list[dict[int, str]]  # per input: dim index → "batch" | "seq"
    seq_max: int | None
    model_args: dict[str, Any]  # what the data decided (vocab, classes, pad id): rebuilds it
    tokenizer: dict[str, Any] | None  # for inference.py: {"kind": "byte"} or a tokenizer.json
    labels: list[str] | None
    hf_auto_class: str | None
    tokenizer_object: Any = None  # the data's tokenizer (saved into the bundle if the artifact
                                  # has no tokenizer file, e.g. a model exported from memory)
    data: Any = None  # the DataBundle the run's config builds (profiled when the artifact
                      # carries no profile.json)

    @property
    def sequences(self) -> bool:
        """Its first input has a sequence axis (text), not a fixed shape (images)."""
        return 1 in self.dims[0]

    @property
    def language_model(self) -> bool:
        return self.cfg.task.type == "language_modeling"


def _hf_auto_class(cfg: TengineConfig) -> str | None:
    if cfg.model.name != "hf":
        return None
    from tengine.models.hf import HEADS, head_for

    return HEADS[head_for(cfg.model, cfg.task.type)]


def _seq_max(model: nn.Module) -> int | None:
    """The longest sequence the model's positions allow (None: any length)."""
    if isinstance(getattr(model, "max_seq_len", None), int):
        return model.max_seq_len
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return None


def build(cfg: TengineConfig, model_args: dict[str, Any], weights: Path) -> nn.Module:
    """The model `cfg` names, sized by `model_args`, with `weights` loaded (strict), fp32 eval."""
    from tengine.engine.weights import init_from
    from tengine.models import build_model

    model = build_model(cfg.model, model_args.get("vocab_size"), model_args.get("num_classes"),
                        model_args["seq_len"], task_type=cfg.task.type,
                        pad_id=model_args.get("pad_id", 0))
    weights_log = logging.getLogger("tengine")
    level = weights_log.level
    weights_log.setLevel(logging.WARNING)  # not "N tensors loaded" for each rebuild
    try:
        init_from(model, weights, strict=True)
    finally:
        weights_log.setLevel(level)
    return model.float().eval()


def load(artifact: Path) -> Exported:
    from tengine.data import build_data
    from tengine.data.collators import build_collator
    from tengine.data.context import DataContext
    from tengine.engine.artifact import WEIGHTS
    from tengine.engine.seeding import seed_everything
    from tengine.engine.trainer import accepted_inputs, model_inputs

    cfg = load_config(artifact / "config.yaml")
    seed_everything(cfg.seed, False)
    data = build_data(cfg.data, cfg.task, DataContext(run_dir=None, saved=artifact))
    if len(data.val) == 0:
        raise ConfigError("export: the run's validation split is empty; parity needs real "
                          "validation batches (raise data.val_fraction)")
    model_args = {"vocab_size": data.vocab_size,
                  "num_classes": cfg.task.num_classes or data.num_classes,
                  "pad_id": data.pad_id, "seq_len": cfg.data.seq_len}
    model = build(cfg, model_args, artifact / WEIGHTS)
    items = [data.val[i] for i in range(min(EXAMPLES, len(data.val)))]
    batch = build_collator(cfg.data.collator, cfg.task.type, data.pad_id)(items)
    inputs = model_inputs(batch, accepted_inputs(model))
    names = list(inputs)
    image = cfg.task.type in IMAGE_TASKS
    dims = [{0: "batch"} if image or inputs[n].dim() < 2 else {0: "batch", 1: "seq"} for n in names]
    kind = getattr(data.tokenizer, "kind", None)
    tokenizer = None if kind is None else {"kind": "byte"} if kind == "byte" else \
        {"kind": "tokenizers", "file": "tokenizer.json"}
    labels = data.info.get("labels")
    return Exported(cfg, model, names, {n: inputs[n].contiguous() for n in names}, dims,
                    None if image else _seq_max(model), model_args, tokenizer,
                    [str(x) for x in labels] if labels else None, _hf_auto_class(cfg),
                    data.tokenizer, data)


def rebuild(bundle: Path, meta: dict[str, Any]) -> nn.Module:
    """The model a bundle holds, rebuilt by tengine from its config.yaml and model.safetensors
    (what `tengine export verify` compares every format against)."""
    cfg = load_config(bundle / "config.yaml")
    if cfg.model.name == "hf":  # the save_pretrained layout: the weights and their config.json
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={
            "hf": cfg.model.hf.model_copy(update={"path": str(bundle), "config": None})})})
    return build(cfg, meta["model"]["args"], bundle / "model.safetensors")
