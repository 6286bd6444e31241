"""Hugging Face models: as a user factory or `model.name: hf`, causal LM and classification,
pretrained weights (`hf.path`, `model.init_from`), activation checkpointing, MFU's estimate."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tengine.cli import main
from tengine.config import load_config
from tengine.config.schema import ModelConfig
from tengine.engine import run
from tengine.errors import ConfigError, ModelError
from tests.conftest import REPO, TINY, read_jsonl

GPT2 = {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 32}
HF = ["model.name=hf", f"model.hf={json.dumps({'config': GPT2})}"]
FAST = ["data.markov.order=1"]  # an order-1 source: these tiny models learn it in ~50 steps


def _cfg(tmp_path, *overrides: str, name: str = "hf"):
    return load_config(REPO / "configs/quickstart.yaml",
                       [*TINY, f"logging.root={tmp_path}", f"name={name}", *overrides])


def _step_losses(summary: dict) -> dict[int, float]:
    from pathlib import Path

    return {r["step"]: r["step_loss"] for r in read_jsonl(Path(summary["run_dir"]) / "metrics.jsonl")}


def test_a_user_factory_returning_an_hf_model_trains(tmp_path, capsys):
    """The reported failure: GPT2LMHeadModel returns a ModelOutput, and the loss read it as a
    tensor. The engine takes its logits."""
    sets = [*TINY, f"logging.root={tmp_path}", "model.name=tests.models.hf_factories:gpt2_lm",
            *FAST, "training.max_steps=40"]
    args = [x for s in sets for x in ("--set", s)]
    assert main(["config", "validate", str(REPO / "configs/quickstart.yaml"), *args]) == 0
    assert main(["train", str(REPO / "configs/quickstart.yaml"), *args]) == 0
    records = read_jsonl(tmp_path / "quickstart" / "metrics.jsonl")
    assert records[-1]["loss"] < records[0]["loss"] - 0.5, (records[0]["loss"], records[-1]["loss"])


def test_hf_gpt2_from_config_learns_the_markov_source_with_the_cache_off(tmp_path):
    summary = run(_cfg(tmp_path, *HF, *FAST, "training.max_steps=60"))
    first = read_jsonl(tmp_path / "hf" / "metrics.jsonl")[0]["loss"]
    # from ~log(16) = 2.77 to within 0.25 nats of the source's entropy rate (1.84)
    assert summary["val_loss"] < first - 0.5, summary
    assert summary["val_loss"] < summary["loss_floor"] + 0.25, summary
    from tengine.models import build_model

    model = build_model(_cfg(tmp_path, *HF).model, vocab_size=16, seq_len=32)
    assert model.config.use_cache is False and type(model).__name__ == "GPT2LMHeadModel"
    assert model.config._attn_implementation == "sdpa"


def test_hf_sequence_classification_learns_the_synthetic_classes(tmp_path):
    summary = run(_cfg(tmp_path, *HF, "task.type=classification", "task.num_classes=4",
                       "data.source=synthetic_classification", "training.max_steps=60",
                       "optim.lr=3e-3", "checkpoint.monitor=val_accuracy", "checkpoint.mode=max",
                       "training.eval_batches=null"))
    assert summary["val_accuracy"] > 0.7, summary  # 4 classes: chance is 0.25


def test_bad_hf_sections_fail_before_any_work(tmp_path):
    from tengine.engine import preflight

    with pytest.raises(Exception, match="model.name 'hf' needs a model.hf section"):
        _cfg(tmp_path, "model.name=hf")
    with pytest.raises(Exception, match="exactly one of `config`"):
        _cfg(tmp_path, "model.name=hf", 'model.hf={"config": {"model_type": "gpt2"}, "path": "x"}')
    with pytest.raises(ConfigError, match="'gtp2' is not a transformers model type.*did you mean 'gpt2'"):
        preflight(_cfg(tmp_path, "model.name=hf", 'model.hf={"config": {"model_type": "gtp2"}}'))
    with pytest.raises(ConfigError, match="model.hf.path: 'nowhere' has no config.json"):
        preflight(_cfg(tmp_path, "model.name=hf", 'model.hf={"path": "nowhere"}'))
    with pytest.raises(ConfigError, match="no head for task.type 'vision_classification'"):
        preflight(_cfg(tmp_path, *HF, "task.type=vision_classification", "task.num_classes=3",
                       "data.source=synthetic_images"))
    with pytest.raises(ConfigError, match="32 positions, fewer than data.seq_len 64"):
        run(_cfg(tmp_path, *HF, "data.seq_len=64"))


def test_a_model_without_logits_gets_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="without 'logits'"):
        run(_cfg(tmp_path, "model.name=tests.models.test_hf:no_logits", "training.max_steps=2"))


class _NoLogits(torch.nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab_size, vocab_size)

    def forward(self, input_ids):
        return {"scores": self.emb(input_ids)}


def no_logits(vocab_size: int) -> torch.nn.Module:
    return _NoLogits(vocab_size)


@pytest.mark.parametrize("model", [["model.dropout=0.1"], [*HF]], ids=["gpt", "hf"])
def test_activation_checkpointing_gives_the_same_curve(tmp_path, model):
    """Recomputation replays the RNG, so even with dropout the per-step losses are the same."""
    common = [*model, "training.max_steps=12", "training.grad_accum_steps=2"]
    plain = _step_losses(run(_cfg(tmp_path, *common, name="plain")))
    ckpt = _step_losses(run(_cfg(tmp_path, *common, "model.activation_checkpointing=true",
                                 name="ckpt")))
    assert sorted(plain) == sorted(ckpt)
    assert max(abs(plain[s] - ckpt[s]) for s in plain) <= 1e-5


def test_activation_checkpointing_really_recomputes(tmp_path):
    """Fewer activations kept: a block's forward runs twice per training step."""
    from tengine.models import build_model

    for on, runs in ((False, 1), (True, 2)):
        calls = []
        model = build_model(ModelConfig(activation_checkpointing=on), vocab_size=16, seq_len=8)
        block, forward = model.blocks[0], model.blocks[0].forward
        block.forward = lambda x, forward=forward, calls=calls: calls.append(1) or forward(x)
        model(torch.randint(0, 16, (2, 8))).sum().backward()
        assert len(calls) == runs


def test_hf_weights_from_a_trained_run_start_where_it_ended(tmp_path):
    """A run's checkpoint → save_pretrained dir → a new run from it, by `init_from` and by
    `hf.path`: its first step's loss (measured before the update) is the source's last."""
    from tengine.engine.weights import load_weights
    from tengine.models import build_model

    source = run(_cfg(tmp_path, *HF, "training.max_steps=60", "schedule.name=constant",
                      name="source"))
    last = _step_losses(source)[60]
    model = build_model(_cfg(tmp_path, *HF).model, vocab_size=16, seq_len=32)
    model.load_state_dict(load_weights(source["last_checkpoint"]), strict=False)
    model.save_pretrained(tmp_path / "hf_dir")
    for name, how in (("init_from", [*HF, f"model.init_from={tmp_path / 'hf_dir'}"]),
                      ("path", ["model.name=hf",
                                f"model.hf={json.dumps({'path': str(tmp_path / 'hf_dir')})}"])):
        new = run(_cfg(tmp_path, *how, "training.max_steps=1", name=name))
        first = _step_losses(new)[1]
        assert abs(first - last) <= 0.02 * last, (first, last)
        assert new["steps"] == 1 and new["resumed_from"] is None  # weights only: a fresh run


def test_init_from_reports_keys_that_do_not_fit(tmp_path):
    from safetensors.torch import save_file

    from tengine.engine.weights import init_from
    from tengine.models import build_model

    model = build_model(ModelConfig(), vocab_size=16, seq_len=8)
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    state.pop("ln_f.bias")
    state["extra.weight"] = torch.zeros(3)
    save_file(state, tmp_path / "w.safetensors")
    with pytest.raises(ModelError, match=r"1 missing keys \(ln_f.bias\) and 1 unexpected keys \(extra.weight\)"):
        init_from(model, tmp_path / "w.safetensors")
    report = init_from(model, tmp_path / "w.safetensors", strict=False)  # lm_head: tied, loaded
    assert report == {"missing": ["ln_f.bias"], "unexpected": ["extra.weight"]}
    wide = build_model(ModelConfig(d_model=32, n_heads=4), vocab_size=16, seq_len=8)
    with pytest.raises(ModelError, match="shapes do not fit"):
        init_from(wide, tmp_path / "w.safetensors", strict=False)
    with pytest.raises(ConfigError, match="model.init_from: '.*nothing' does not exist"):
        from tengine.engine import preflight

        preflight(_cfg(tmp_path, f"model.init_from={tmp_path / 'nothing'}"))


def test_mfu_estimate_for_any_model_matches_the_gpt_formula():
    from tengine.engine.metrics import flops_per_token
    from tengine.models import build_model

    ours = build_model(ModelConfig(d_model=64, n_layers=2, n_heads=2), vocab_size=100, seq_len=32)
    hf = build_model(ModelConfig(name="hf", hf={"config": GPT2}), vocab_size=100, seq_len=32)
    assert not hasattr(hf, "flops_per_token")
    assert flops_per_token(hf, 32) == flops_per_token(ours, 32) == ours.flops_per_token(32)


def test_hf_gpt2_with_a_local_hf_tokenizer_learns_text_files(tmp_path, hf_dir):
    """The everyday setup: a Hugging Face model and tokenizer, a corpus of text files."""
    from tests.conftest import STDLIB

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("bisect.py", "colorsys.py", "textwrap.py", "heapq.py"):
        (corpus / name).write_text((STDLIB / name).read_text())
    summary = run(_cfg(tmp_path, *HF, "data.source=text_files", f"data.path={corpus}/*.py",
                       "data.tokenizer=hf", f"data.tokenizer_path={hf_dir}",
                       "training.max_steps=60", "training.eval_every_n_steps=10",
                       "training.eval_batches=null", "optim.lr=3e-3"))
    start = read_jsonl(tmp_path / "hf" / "metrics.jsonl")[0]["step_loss"]  # step 1, untrained
    vals = [r["val_loss"] for r in read_jsonl(tmp_path / "hf" / "metrics.jsonl", "val")]
    # a 400-token vocabulary: the untrained model is at ~log(400) = 5.99 nats; after 60 steps
    # the validation loss is over 1.2 nats lower, and still falling from evaluation to evaluation
    assert abs(start - math.log(400)) < 0.3, start
    assert vals[-1] < start - 1.2 and vals[-1] < vals[0] - 0.25, (start, vals)
    assert summary["status"] == "completed"
