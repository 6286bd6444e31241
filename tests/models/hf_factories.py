"""User factories that return Hugging Face models, as a user's own package would."""

from __future__ import annotations


def gpt2_lm(vocab_size: int, max_seq_len: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=max_seq_len, n_layer=2,
                                      n_embd=64, n_head=2, bos_token_id=None, eos_token_id=None))
