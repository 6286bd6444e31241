"""Hugging Face `transformers` models as `model.name: hf`.

    model: {name: hf, hf: {config: {model_type: gpt2, n_layer: 2, n_embd: 64, n_head: 2}}}
    model: {name: hf, hf: {path: runs/base/hf}}           # save_pretrained dir, weights loaded

`config` builds a random-init model from config fields (`vocab_size` and, for classification,
`num_labels` default to the data's); `path` loads a local directory (no hub: this engine runs
offline). The head follows the task: causal LM for language_modeling, sequence classification
for classification. Training runs with `use_cache=False` (a KV cache is for generation and
costs memory), SDPA attention by default. `transformers` is imported only here, through
`tengine.extras.require`, so the core install never needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from tengine.config.schema import ModelConfig
from tengine.errors import ConfigError
from tengine.extras import require

HEADS = {"causal_lm": "AutoModelForCausalLM",
         "sequence_classification": "AutoModelForSequenceClassification"}
TASK_HEAD = {"language_modeling": "causal_lm", "classification": "sequence_classification"}


def head_for(m: ModelConfig, task_type: str) -> str:
    if m.hf.head != "auto":
        return m.hf.head
    if task_type not in TASK_HEAD:
        raise ConfigError(f"model.name 'hf' has no head for task.type '{task_type}'; it fits "
                          f"{', '.join(TASK_HEAD)} (model.hf.head: causal_lm | sequence_classification)")
    return TASK_HEAD[task_type]


def check_hf(m: ModelConfig, task_type: str) -> None:
    """Preflight: transformers installed, the directory or model_type real, a head for the task."""
    transformers = require("transformers", "hf", "model.name 'hf'")
    head_for(m, task_type)
    if m.hf.path is not None:
        if not (Path(m.hf.path) / "config.json").is_file():
            raise ConfigError(f"model.hf.path: '{m.hf.path}' has no config.json; give a directory "
                              "written by save_pretrained")
        return
    model_type = m.hf.config["model_type"]
    known = transformers.CONFIG_MAPPING.keys()
    if model_type not in known:
        from tengine.registry import did_you_mean

        raise ConfigError(f"model.hf.config.model_type: '{model_type}' is not a transformers "
                          f"model type{did_you_mean(model_type, list(known))}")


def build_hf(m: ModelConfig, task_type: str, vocab_size: int | None, num_classes: int | None,
             seq_len: int, pad_id: int | None = None) -> nn.Module:
    transformers = require("transformers", "hf", "model.name 'hf'")
    head = head_for(m, task_type)
    auto = getattr(transformers, HEADS[head])
    extra: dict[str, Any] = {"attn_implementation": m.hf.attn_implementation}
    if m.hf.path is not None:
        config = transformers.AutoConfig.from_pretrained(m.hf.path)
        if head == "sequence_classification" and num_classes:
            extra["num_labels"] = num_classes
        model = auto.from_pretrained(m.hf.path, **extra)
    else:
        fields = dict(m.hf.config)
        fields.setdefault("vocab_size", m.vocab_size or vocab_size)
        if head == "sequence_classification":
            fields.setdefault("num_labels", m.num_classes or num_classes)
        for special in ("bos_token_id", "eos_token_id"):  # a model type's defaults (GPT-2's
            fields.setdefault(special, None)               # 50256) point outside a small vocab
        if fields.get("vocab_size") is None:
            raise ConfigError("model.hf.config.vocab_size: required here (the data source sets none)")
        try:
            config = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"model.hf.config: {err}") from None
        model = auto.from_config(config, **extra)
    config = model.config
    if vocab_size and config.vocab_size < vocab_size:
        raise ConfigError(f"model.hf: the model's vocab_size {config.vocab_size} is smaller than "
                          f"the tokenizer's {vocab_size}; use the model's own tokenizer "
                          "(data.tokenizer: hf) or a larger vocab_size")
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and positions < seq_len:
        raise ConfigError(f"model.hf: the model has {positions} positions, fewer than "
                          f"data.seq_len {seq_len}; lower data.seq_len or raise "
                          "model.hf.config's position count (n_positions / max_position_embeddings)")
    if head == "sequence_classification" and config.pad_token_id is None and pad_id is not None:
        config.pad_token_id = pad_id  # finds each sequence's last real token
    config.use_cache = False
    return model
