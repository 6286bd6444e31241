"""Models: the GPT is causal and tied, sizes match presets, user factories load by path."""

from __future__ import annotations

import pytest
import torch

from tengine.config.schema import ModelConfig
from tengine.errors import ConfigError
from tengine.models import SIZES, build_model


def test_gpt_is_causal_and_ties_weights():
    torch.manual_seed(0)
    model = build_model(ModelConfig(), vocab_size=50, seq_len=16).eval()
    x = torch.randint(0, 50, (2, 16))
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 1) % 50  # change the future only
    with torch.no_grad():
        a, b = model(x), model(y)
    assert a.shape == (2, 16, 50)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6) and not torch.allclose(a[:, 10:], b[:, 10:])
    assert model.lm_head.weight is model.tok_emb.weight


def test_sizes_and_flops_per_token():
    gpt2 = build_model(ModelConfig(size="gpt2"), vocab_size=50304, seq_len=1024)
    assert 123e6 < gpt2.num_params(non_embedding=False) < 126e6  # GPT-2 small: 124M
    n = gpt2.num_params()
    assert gpt2.flops_per_token(1024) == 6 * n + 12 * 12 * 768 * 1024
    small = build_model(ModelConfig(size="small", n_layers=2), vocab_size=100, seq_len=32)
    assert (small.d_model, small.n_layers) == (SIZES["small"][0], 2)


def test_model_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="model.size: 'huge' unknown"):
        build_model(ModelConfig(size="huge"), vocab_size=10)
    with pytest.raises(ConfigError, match="model.d_model 100 is not divisible by model.n_heads 3"):
        build_model(ModelConfig(d_model=100, n_heads=3), vocab_size=10)
    with pytest.raises(ConfigError, match="model.max_seq_len 8 is shorter than data.seq_len 16"):
        build_model(ModelConfig(max_seq_len=8), vocab_size=10, seq_len=16)
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        build_model(ModelConfig(name="tests.engine.helpers:nope"), vocab_size=10)


def test_user_factory_gets_what_its_signature_names():
    model = build_model(ModelConfig(name="tests.engine.helpers:poisoned_gpt",
                                    kwargs={"poison_from": 99}), vocab_size=40, seq_len=24)
    assert model.max_seq_len == 24 and model.lm_head.out_features == 40 and model.poison_from == 99


def test_classifiers_shapes():
    text = build_model(ModelConfig(name="classifier"), vocab_size=30, num_classes=4)
    ids, mask = torch.randint(0, 30, (3, 7)), torch.ones(3, 7, dtype=torch.long)
    assert text(ids, mask).shape == (3, 4)
    cnn = build_model(ModelConfig(name="vision_cnn"), num_classes=5)
    assert cnn(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    with pytest.raises(ConfigError, match="model.num_classes: required"):
        build_model(ModelConfig(name="vision_cnn"))


def test_a_model_registered_by_name_passes_preflight_and_builds():
    from tengine.models import MODELS, check_model

    @MODELS.register("test_registered_mlp")
    def _mlp(m, vocab_size, num_classes, seq_len, **_):
        return torch.nn.Sequential(torch.nn.Embedding(vocab_size, 8), torch.nn.Linear(8, vocab_size))

    check_model(ModelConfig(name="test_registered_mlp"), "language_modeling")
    model = build_model(ModelConfig(name="test_registered_mlp"), vocab_size=12)
    assert model(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, 12)
