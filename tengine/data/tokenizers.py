"""Tokenizers: byte-level by default, a byte-level BPE trained once per run, or a local HF one.

Each gives `encode(text) -> list[int]`, `encode_batch(texts)`, `decode(ids) -> str`,
`vocab_size`, `eos_id`, `pad_id`, and (`bpe`, `hf`) `save(dir)`:

    tok = build_tokenizer(cfg.data, train_texts, DataContext(run_dir=..., saved=...))

- `byte`: UTF-8 bytes; nothing to train or save.
- `bpe`: trained on the run's own training texts (no hub download), on rank 0 only, and saved as
  `RUN_DIR/tokenizer.json`; the other ranks, a resumed run and `tengine evaluate` load that
  file, so the ids never change with what the corpus glob matches later.
- `hf`: `data.tokenizer_path`, a `tokenizer.json` (HF `tokenizers`) or a `save_pretrained`
  directory (`transformers.AutoTokenizer`, which must be a fast tokenizer); a copy goes to the
  run dir so exports find it. The tokenizer adds no special tokens of its own: the end-of-document
  token (`data.eos_token`, else the tokenizer's) goes between documents.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from tengine.config.schema import DataConfig
from tengine.data.context import DataContext
from tengine.errors import DataError, TengineError
from tengine.registry import Registry

log = logging.getLogger("tengine")
TOKENIZERS: Registry = Registry("tokenizer", "data.tokenizer")
TOKENIZER_FILE = "tokenizer.json"
HF_CONFIG_FILE = "tokenizer_config.json"  # written beside tokenizer.json by save_pretrained
SAVED_FILES = (TOKENIZER_FILE, HF_CONFIG_FILE, "special_tokens_map.json")  # what `save` may write
# Looked for in a bare tokenizer.json that names no end-of-document or padding token itself.
KNOWN_EOS = ("<|endoftext|>", "</s>", "<|eos|>", "<eos>", "<|end_of_text|>", "<|im_end|>")
KNOWN_PAD = ("<|pad|>", "<pad>", "[PAD]", "<|padding|>")


@TOKENIZERS.register("byte")
class ByteTokenizer:
    """UTF-8 bytes 0–255, end-of-document 256, padding 257."""

    kind = "byte"
    vocab_size = 258
    eos_id = 256
    pad_id = 257

    def __init__(self, texts: Iterable[str] | None = None, vocab_size: int | None = None):
        pass  # nothing to learn

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8", errors="replace"))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


@TOKENIZERS.register("hf")
class HFTokenizer:
    """A HF `tokenizers.Tokenizer` (the fast tokenizer inside an AutoTokenizer too) with its
    end-of-document and padding ids. `wrapper` is the transformers tokenizer it came from."""

    kind = "hf"

    def __init__(self, backend, eos_id: int, pad_id: int, wrapper=None, source: Path | None = None):
        self._tok, self.wrapper, self.source = backend, wrapper, source
        self.vocab_size = len(wrapper) if wrapper is not None else \
            backend.get_vocab_size(with_added_tokens=True)
        self.eos_id, self.pad_id = eos_id, pad_id

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids))

    def save(self, directory: Path) -> None:
        """`directory/tokenizer.json` (and, from an AutoTokenizer directory, its
        tokenizer_config.json, so `AutoTokenizer.from_pretrained(directory)` loads it too)."""
        directory.mkdir(parents=True, exist_ok=True)
        if self.wrapper is not None:
            self.wrapper.save_pretrained(str(directory))
        elif self.source is not None and self.source.is_file():
            _replace(directory / TOKENIZER_FILE, lambda tmp: shutil.copyfile(self.source, tmp))
        else:
            _replace(directory / TOKENIZER_FILE, lambda tmp: self._tok.save(str(tmp)))


@TOKENIZERS.register("bpe")
class BPETokenizer(HFTokenizer):
    """Byte-level BPE trained on `texts` with HF tokenizers (seconds for a few MB)."""

    kind = "bpe"
    EOS, PAD = "<|eos|>", "<|pad|>"

    def __init__(self, texts: Iterable[str], vocab_size: int = 1024):
        from tengine.extras import require

        require("tokenizers", "hf", "data.tokenizer 'bpe'")  # missing: exit 2 naming the extra
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[self.EOS, self.PAD],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        super().__init__(tok, tok.token_to_id(self.EOS), tok.token_to_id(self.PAD))

    @classmethod
    def load(cls, file: Path) -> BPETokenizer:
        """A BPE tokenizer saved by `save` (a run dir's tokenizer.json)."""
        from tengine.extras import require

        tokenizers = require("tokenizers", "hf", "data.tokenizer 'bpe'")
        backend = _read_tokenizer_json(tokenizers, file, "data.tokenizer")
        eos, pad = backend.token_to_id(cls.EOS), backend.token_to_id(cls.PAD)
        if eos is None or pad is None:
            raise DataError(f"data.tokenizer: {file} is not a tengine BPE tokenizer (no "
                            f"{cls.EOS}/{cls.PAD} tokens); it was saved with data.tokenizer 'hf'? "
                            "use the tokenizer setting of the run that saved it")
        tok = cls.__new__(cls)
        HFTokenizer.__init__(tok, backend, eos, pad)
        return tok


def _replace(target: Path, write) -> None:
    """Write through a temporary name, so no reader ever sees half a tokenizer."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, target)


def _read_tokenizer_json(tokenizers, file: Path, field: str):
    try:
        return tokenizers.Tokenizer.from_file(str(file))
    except Exception as err:  # noqa: BLE001 — a bad file becomes one line naming it
        raise DataError(f"{field}: cannot read tokenizer '{file}': {err}") from None


def load_hf_tokenizer(path: str | Path, eos_token: str | None,
                      field: str = "data.tokenizer_path") -> HFTokenizer:
    """A `tokenizer.json` file or a `save_pretrained` directory; local files only."""
    from tengine.extras import require

    p = Path(path)
    wrapper = None
    if p.is_dir():
        transformers = require("transformers", "hf", "data.tokenizer 'hf' with a directory",
                               otherwise="point data.tokenizer_path at its tokenizer.json")
        try:
            wrapper = transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        except Exception as err:  # noqa: BLE001 — whatever AutoTokenizer says, as one line
            raise DataError(f"{field}: cannot load a tokenizer from directory '{p}': "
                            f"{type(err).__name__}: {err}") from None
        if not getattr(wrapper, "is_fast", False) or getattr(wrapper, "backend_tokenizer", None) is None:
            raise DataError(f"{field}: '{p}' holds a slow (Python) tokenizer; tengine needs a fast "
                            "one (a tokenizer.json): save it with a fast tokenizer class")
        backend = wrapper.backend_tokenizer
        eos_name, pad_name = eos_token or wrapper.eos_token, wrapper.pad_token
    elif p.is_file():
        tokenizers = require("tokenizers", "hf", "data.tokenizer 'hf'")
        backend = _read_tokenizer_json(tokenizers, p, field)
        vocab = backend.get_vocab(with_added_tokens=True)
        eos_name = eos_token or next((t for t in KNOWN_EOS if t in vocab), None)
        pad_name = next((t for t in KNOWN_PAD if t in vocab), None)
    else:
        raise DataError(f"{field}: '{p}' does not exist; give a tokenizer.json file or a "
                        "save_pretrained directory")
    eos_id = backend.token_to_id(eos_name) if eos_name else None
    if eos_id is None:
        specials = sorted(t.content for t in backend.get_added_tokens_decoder().values())[:12]
        what = f"has no token '{eos_name}'" if eos_name else "names no end-of-document token"
        raise DataError(f"data.eos_token: tokenizer '{p}' {what}; set data.eos_token to one of "
                        f"its tokens (its special tokens: {', '.join(specials) or 'none'})")
    pad_id = backend.token_to_id(pad_name) if pad_name else None
    return HFTokenizer(backend, eos_id, eos_id if pad_id is None else pad_id, wrapper=wrapper,
                       source=p)


def load_saved(data: DataConfig, run_dir: Path) -> HFTokenizer:
    """The tokenizer a run saved in `run_dir` (see `HFTokenizer.save`)."""
    if data.tokenizer == "bpe":
        return BPETokenizer.load(run_dir / TOKENIZER_FILE)
    target = run_dir if (run_dir / HF_CONFIG_FILE).is_file() else run_dir / TOKENIZER_FILE
    return load_hf_tokenizer(target, data.eos_token, field="data.tokenizer")


def build_tokenizer(data: DataConfig, texts: list[str], ctx: DataContext | None = None):
    """The run's tokenizer: reused from `ctx.saved`, else trained/loaded (and saved by rank 0)."""
    ctx = ctx or DataContext()
    if data.tokenizer == "byte":
        return ByteTokenizer()
    if ctx.saved is not None and (ctx.saved / TOKENIZER_FILE).is_file():
        log.info("using the tokenizer saved in %s (not trained again)", ctx.saved)
        return load_saved(data, ctx.saved)
    if ctx.saved is not None and data.tokenizer == "bpe":
        log.warning("%s has no %s (a run from an older tengine?): training the BPE tokenizer again "
                    "on data.path; if the corpus changed, its ids differ from the checkpoint's",
                    ctx.saved, TOKENIZER_FILE)
    if data.tokenizer == "hf":
        tok = load_hf_tokenizer(data.tokenizer_path, data.eos_token)
        if ctx.is_main and ctx.run_dir is not None:
            tok.save(ctx.run_dir)
        return tok
    if ctx.run_dir is None:
        return BPETokenizer(texts, data.bpe_vocab_size)
    error = None
    if ctx.is_main:  # trained once; the other ranks wait in broadcast and load the file
        try:
            BPETokenizer(texts, data.bpe_vocab_size).save(ctx.run_dir)
        except TengineError as err:
            error = str(err)
        except Exception as err:  # noqa: BLE001 — every rank must learn it, or they hang
            error = f"data.tokenizer 'bpe': training failed on rank 0: {type(err).__name__}: {err}"
    error = ctx.broadcast(error)
    if error:
        raise DataError(error)
    return BPETokenizer.load(ctx.run_dir / TOKENIZER_FILE)
