"""Tokenizers: byte-level by default, a byte-level BPE (HF `tokenizers`) trained locally.

Both give `encode(text) -> list[int]`, `decode(ids) -> str`, `vocab_size`, `eos_id`, `pad_id`.
The BPE is trained on the run's own corpus (no hub download), so it works offline.
"""

from __future__ import annotations

from collections.abc import Iterable

from tengine.registry import Registry

TOKENIZERS: Registry = Registry("tokenizer", "data.tokenizer")


@TOKENIZERS.register("byte")
class ByteTokenizer:
    """UTF-8 bytes 0–255, end-of-document 256, padding 257."""

    vocab_size = 258
    eos_id = 256
    pad_id = 257

    def __init__(self, texts: Iterable[str] | None = None, vocab_size: int | None = None):
        pass  # nothing to learn

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8", errors="replace"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


@TOKENIZERS.register("bpe")
class BPETokenizer:
    """Byte-level BPE trained on `texts` with HF tokenizers (seconds for a few MB)."""

    def __init__(self, texts: Iterable[str], vocab_size: int = 1024):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=["<|eos|>", "<|pad|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.eos_id = tok.token_to_id("<|eos|>")
        self.pad_id = tok.token_to_id("<|pad|>")

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids))


def build_tokenizer(name: str, texts: list[str], vocab_size: int):
    return TOKENIZERS.get(name)(texts, vocab_size)
