"""Model registry: `gpt`, `hf`, `classifier`, `vision_cnn`, or any `package.module:factory`.

    model = build_model(cfg.model, vocab_size=258, num_classes=None, seq_len=128)

Each registered builder takes the resolved `ModelConfig` plus what the data decided
(vocab size, classes, sequence length, the task and the pad id). A user factory is called with
`model.kwargs` and, where its signature names them, `vocab_size`, `num_classes` and
`max_seq_len`. Every model then gets the same finishing: `use_cache` off for HF models (a user
factory's too) and `model.activation_checkpointing`.
"""

from __future__ import annotations

import inspect
from functools import partial

from torch import nn

from tengine.config.schema import ModelConfig
from tengine.errors import ConfigError
from tengine.models.gpt import GPT, SIZES
from tengine.models.simple import TextClassifier, VisionCNN
from tengine.registry import Registry, did_you_mean, import_path

MODELS: Registry = Registry("model", "model.name")


def _need(value, field: str, hint: str):
    if value is None:
        raise ConfigError(f"{field}: required here ({hint})")
    return value


@MODELS.register("gpt")
def _gpt(m: ModelConfig, vocab_size: int | None, num_classes: int | None, seq_len: int,
         **_) -> nn.Module:
    if m.size not in SIZES:
        raise ConfigError(f"model.size: '{m.size}' unknown{did_you_mean(m.size, list(SIZES))}; "
                          f"valid: {', '.join(SIZES)}")
    d, n_layers, n_heads = SIZES[m.size]
    d, n_layers, n_heads = m.d_model or d, m.n_layers or n_layers, m.n_heads or n_heads
    if d % n_heads:
        raise ConfigError(f"model.d_model {d} is not divisible by model.n_heads {n_heads}")
    max_len = m.max_seq_len or seq_len
    if max_len < seq_len:
        raise ConfigError(f"model.max_seq_len {max_len} is shorter than data.seq_len {seq_len}")
    vocab = _need(m.vocab_size or vocab_size, "model.vocab_size", "the data source sets none")
    return GPT(vocab, d, n_layers, n_heads, m.d_ff, max_len, m.dropout, m.tie_weights,
               **m.kwargs)


@MODELS.register("classifier")
def _classifier(m: ModelConfig, vocab_size: int | None, num_classes: int | None,
                seq_len: int, **_) -> nn.Module:
    classes = _need(m.num_classes or num_classes, "model.num_classes", "set task.num_classes")
    vocab = _need(m.vocab_size or vocab_size, "model.vocab_size", "the data source sets none")
    return TextClassifier(vocab, classes, m.d_model or 64, m.dropout, **m.kwargs)


@MODELS.register("vision_cnn")
def _vision(m: ModelConfig, vocab_size: int | None, num_classes: int | None,
            seq_len: int, **_) -> nn.Module:
    classes = _need(m.num_classes or num_classes, "model.num_classes", "set task.num_classes")
    return VisionCNN(classes, dropout=m.dropout, **m.kwargs)


@MODELS.register("hf")
def _hf(m: ModelConfig, vocab_size: int | None, num_classes: int | None, seq_len: int,
        task_type: str = "language_modeling", pad_id: int | None = None) -> nn.Module:
    from tengine.models.hf import build_hf

    return build_hf(m, task_type, vocab_size, num_classes, seq_len, pad_id)


def _user_factory(factory, m: ModelConfig, vocab_size: int | None, num_classes: int | None,
                  seq_len: int, **_) -> nn.Module:
    params = inspect.signature(factory).parameters
    offered = {"vocab_size": m.vocab_size or vocab_size,
               "num_classes": m.num_classes or num_classes,
               "max_seq_len": m.max_seq_len or seq_len}
    kwargs = {k: v for k, v in offered.items() if k in params and v is not None}
    model = factory(**kwargs, **m.kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.name: '{m.name}' returned {type(model).__name__}, not an nn.Module")
    return model


def resolve_builder(name: str):
    """The builder for `model.name`; an import path is imported now, so typos fail early."""
    if ":" in name:
        return partial(_user_factory, import_path(name, "model.name"))
    return MODELS.get(name)


# What each registered model is built from, which config fields its builder already passes, and
# which tasks its outputs fit; used to reject a bad `model` section before any data is built.
BUILT = {"gpt": (GPT, {"vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len",
                       "dropout", "tie_weights"}, {"language_modeling"}),
         "classifier": (TextClassifier, {"vocab_size", "num_classes", "d_model", "dropout"},
                        {"classification", "multilabel"}),
         "vision_cnn": (VisionCNN, {"num_classes", "dropout"}, {"vision_classification"})}


def check_model(m: ModelConfig, task_type: str) -> None:
    """Raise ConfigError for a `model` section that cannot be built for `task_type`."""
    builder = resolve_builder(m.name)  # unknown name / bad import path
    problems = []
    if m.name == "gpt" and m.size not in SIZES:
        problems.append(f"model.size: '{m.size}' unknown{did_you_mean(m.size, list(SIZES))}; "
                        f"valid: {', '.join(SIZES)}")
    if m.name == "hf":
        from tengine.models.hf import check_hf

        check_hf(m, task_type)
        if m.kwargs:
            raise ConfigError("model.kwargs: not used by model.name 'hf'; put the fields in "
                              "model.hf.config")
        return
    if m.activation_checkpointing and m.name in ("classifier", "vision_cnn"):
        raise ConfigError(f"model.activation_checkpointing: model '{m.name}' has no blocks to "
                          "recompute; turn it off")
    if m.name in BUILT:
        target, passed, tasks = BUILT[m.name]
        if task_type not in tasks:
            problems.append(f"model.name '{m.name}' cannot do task.type '{task_type}' (it fits "
                            f"{', '.join(sorted(tasks))}); pick another model or your own "
                            "package.module:factory")
    elif isinstance(builder, partial):  # a user factory: its own signature takes model.kwargs
        target, passed = builder.args[0], set()
    else:  # registered by a user: it gets the ModelConfig and handles model.kwargs itself
        return
    params = inspect.signature(target).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        allowed = [n for n in params if n not in passed and n != "self"]
        for key in m.kwargs:
            if key not in allowed:
                where = f"set model.{key} instead" if key in passed else (
                    f"allowed: {', '.join(allowed) or 'none'}")
                problems.append(f"model.kwargs: '{key}' is not an argument of "
                                f"{getattr(target, '__name__', m.name)}; {where}")
    if problems:
        raise ConfigError(problems)


def build_model(m: ModelConfig, vocab_size: int | None = None, num_classes: int | None = None,
                seq_len: int = 128, *, task_type: str = "language_modeling",
                pad_id: int | None = None) -> nn.Module:
    model = resolve_builder(m.name)(m, vocab_size, num_classes, seq_len, task_type=task_type,
                                    pad_id=pad_id)
    hf_config = getattr(model, "config", None)
    if hasattr(hf_config, "use_cache"):  # an HF model, ours or a user factory's
        hf_config.use_cache = False
    if m.activation_checkpointing:
        enable_activation_checkpointing(model, m.name)
    return model


def enable_activation_checkpointing(model: nn.Module, name: str) -> None:
    """Recompute activations in backward: HF's own switch, or per block for our GPT."""
    # non-reentrant: works with torch.compile, FSDP2 and inputs that need no grad
    if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5 (the old name warns)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif isinstance(model, GPT):
        model.checkpoint_blocks = True
    else:
        raise ConfigError(f"model.activation_checkpointing: model '{name}' "
                          f"({type(model).__name__}) has no activation_checkpointing_enable() or "
                          "gradient_checkpointing_enable(); "
                          "wrap its blocks in torch.utils.checkpoint yourself or turn it off")


__all__ = ["GPT", "MODELS", "SIZES", "TextClassifier", "VisionCNN", "build_model"]
