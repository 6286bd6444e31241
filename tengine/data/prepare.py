"""`tengine data prepare`: text and JSONL files → token shards for the `tokens` source.

    tengine data prepare 'corpus/**/*.txt' --out data/corpus                     # byte-level
    tengine data prepare docs.jsonl --out data/docs --tokenizer bpe --bpe-vocab-size 8192
    tengine data prepare docs.jsonl --out data/docs --tokenizer hf --tokenizer-path tok/
    # then: --set data.source=tokens --set data.path=data/corpus

Writes `OUT/train_000000.bin ...` (raw ids, at most `--shard-tokens` per file),
`OUT/val_000000.bin ...` (the last `--val-fraction` of the tokens), `OUT/meta.json` (dtype:
uint16 when the vocabulary fits, else uint32; token counts; tokenizer; vocab size; eos id;
source files) and `OUT/tokenizer.json` for `bpe`/`hf`. `.jsonl` inputs give one document per
record (`--text-field`), any other file one document per file; the end-of-document id follows
every document. Streaming: files are read a megabyte at a time (text files split at line ends)
and ids are appended to the open shard, so memory does not grow with the corpus (`bpe` reads the
corpus twice: once to train, once to encode). Everything is written under `OUT/.prepare-tmp`
and moved into place at the end, so a failed run leaves no half-written shard set.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tengine.data.sources import parse_json_line
from tengine.data.tokenizers import BPETokenizer, ByteTokenizer, load_hf_tokenizer
from tengine.data.tokens import META_FILE
from tengine.errors import DataError

JSONL_SUFFIXES = (".jsonl", ".ndjson")
CHUNK_BYTES = 1 << 20  # text read per piece; a piece ends at a line end
CHUNK_IDS = 1 << 20  # ids copied at once when the validation tail is moved
BATCH_BYTES = 8 << 20  # text handed to the tokenizer at once (HF encodes a batch in parallel)
MAX_LISTED_SOURCES = 1000


@dataclass
class PrepareOptions:
    tokenizer: str = "byte"  # byte | bpe | hf
    tokenizer_path: str | None = None
    eos_token: str | None = None
    bpe_vocab_size: int = 1024
    text_field: str = "text"
    val_fraction: float = 0.01
    shard_tokens: int = 100_000_000
    progress: bool | None = None  # None = on a TTY outside CI


def input_files(patterns: list[str]) -> list[Path]:
    """Files matched by each glob (or under each directory), in order, without repeats."""
    files: dict[Path, None] = {}
    for pattern in patterns:
        root = Path(pattern)
        found = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else sorted(
            Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not found:
            raise DataError(f"data prepare: no input file matches '{pattern}'; check the path "
                            "or glob (quote it so the shell does not expand it)")
        files.update(dict.fromkeys(found))
    return list(files)


def _pieces(files: list[Path], text_field: str, bar) -> Iterator[tuple[str, bool]]:
    """(text, ends a document) in reading order; `bar` advances by the bytes read."""
    for path in files:
        with path.open("rb") as fh:
            if path.suffix in JSONL_SUFFIXES:
                for lineno, raw in enumerate(fh, 1):
                    bar.update(len(raw))
                    if raw.strip():
                        yield _record_text(parse_json_line(raw, path, lineno), text_field,
                                           path, lineno), True
                continue
            while chunk := fh.read(CHUNK_BYTES):
                chunk += fh.readline()  # end the piece at a line end (never inside a character)
                bar.update(len(chunk))
                yield chunk.decode("utf-8", errors="replace"), False
            yield "", True


def _record_text(record, text_field: str, path: Path, lineno: int) -> str:
    if not isinstance(record, dict) or text_field not in record:
        keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
        raise DataError(f"{path}:{lineno}: no field '{text_field}' (keys: {keys}); set "
                        "--text-field")
    return str(record[text_field])


class ShardWriter:
    """Appends ids to `<split>_000000.bin`, `<split>_000001.bin`, ... of `shard_tokens` each."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.directory, self.split, self.dtype = directory, split, np.dtype(dtype)
        self.shard_tokens = shard_tokens
        self.counts: dict[str, int] = {}
        self._fh = None

    def write(self, ids: np.ndarray) -> None:
        while len(ids):
            if self._fh is None or self.counts[self._name] == self.shard_tokens:
                self._roll()
            take = min(len(ids), self.shard_tokens - self.counts[self._name])
            self._fh.write(ids[:take].astype(self.dtype, copy=False).tobytes())
            self.counts[self._name] += take
            ids = ids[take:]

    def _roll(self) -> None:
        self.close()
        self._name = f"{self.split}_{len(self.counts):06d}.bin"
        self.counts[self._name] = 0
        self._fh = (self.directory / self._name).open("wb")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    @property
    def tokens(self) -> int:
        return sum(self.counts.values())


def _move_tail_to_val(train: ShardWriter, val: ShardWriter, n: int) -> None:
    """The last `n` ids of the train shards become the validation shards (read in chunks)."""
    start, pos = train.tokens - n, 0
    for name, count in list(train.counts.items()):
        keep = max(start - pos, 0)
        pos += count
        if keep >= count:
            continue
        path = train.directory / name
        ids = np.memmap(path, dtype=train.dtype, mode="r")
        for lo in range(keep, count, CHUNK_IDS):
            val.write(np.array(ids[lo:min(lo + CHUNK_IDS, count)]))
        del ids
        if keep:
            os.truncate(path, keep * train.dtype.itemsize)
            train.counts[name] = keep
        else:
            path.unlink()
            del train.counts[name]
    val.close()


def _tokenizer(opts: PrepareOptions, files: list[Path], bar_for):
    if opts.tokenizer == "byte":
        return ByteTokenizer()
    if opts.tokenizer == "hf":
        if not opts.tokenizer_path:
            raise DataError("data prepare: --tokenizer hf needs --tokenizer-path (a tokenizer.json "
                            "file or a save_pretrained directory)")
        return load_hf_tokenizer(opts.tokenizer_path, opts.eos_token, field="--tokenizer-path")
    if opts.tokenizer != "bpe":
        raise DataError(f"data prepare: --tokenizer '{opts.tokenizer}' unknown; use byte, bpe or hf")
    if opts.bpe_vocab_size < 260:  # 256 bytes + the special tokens, as data.bpe_vocab_size
        raise DataError(f"data prepare: --bpe-vocab-size {opts.bpe_vocab_size} must be ≥ 260")
    with bar_for("reading to train the BPE") as bar:
        texts = (text for text, _ in _pieces(files, opts.text_field, bar) if text)
        first = next(texts, None)
        if first is None:
            raise DataError("data prepare: the inputs hold no text (every file is empty)")
        return BPETokenizer(_chain(first, texts), opts.bpe_vocab_size)


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _encode(tok, texts: list[str]) -> list[np.ndarray]:
    if isinstance(tok, ByteTokenizer):  # the bytes are the ids: no Python ints at all
        return [np.frombuffer(t.encode("utf-8", errors="replace"), dtype=np.uint8) for t in texts]
    return [np.asarray(ids, dtype=np.uint32) for ids in tok.encode_batch(texts)]


def prepare(inputs: list[str], out: str | Path, opts: PrepareOptions | None = None) -> dict:
    """Tokenize `inputs` into shards under `out`; returns the meta.json it wrote."""
    from tqdm.auto import tqdm

    opts = opts or PrepareOptions()
    if not 0 <= opts.val_fraction < 1:
        raise DataError(f"data prepare: --val-fraction {opts.val_fraction} must be in [0, 1)")
    if opts.shard_tokens < 1:
        raise DataError(f"data prepare: --shard-tokens {opts.shard_tokens} must be ≥ 1")
    t0, out = time.perf_counter(), Path(out)
    files = input_files(inputs)
    if (out / META_FILE).exists() or any(out.glob("train_*.bin")):
        raise DataError(f"data prepare: --out {out} already holds token shards; give a new "
                        "directory or delete them")
    total_bytes = sum(f.stat().st_size for f in files)
    show = opts.progress if opts.progress is not None else (
        sys.stderr.isatty() and not os.environ.get("CI"))

    def bar_for(desc: str):
        return tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, disable=not show)

    tok = _tokenizer(opts, files, bar_for)
    dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32
    tmp = out / ".prepare-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        train, documents, content = ShardWriter(tmp, "train", dtype, opts.shard_tokens), 0, 0
        with bar_for("tokenizing") as bar:
            batch: list[tuple[str, bool]] = []
            size = 0
            for text, ends in _pieces(files, opts.text_field, bar):
                batch.append((text, ends))
                size += len(text)
                if size >= BATCH_BYTES or len(batch) >= 4096:
                    documents, content = _write_batch(tok, batch, train, documents, content)
                    batch, size = [], 0
            documents, content = _write_batch(tok, batch, train, documents, content)
        train.close()
        if content == 0:
            raise DataError(f"data prepare: the inputs hold no text ({len(files)} files, "
                            f"{total_bytes} bytes, no document with any content)")
        val = ShardWriter(tmp, "val", dtype, opts.shard_tokens)
        n_val = int(round(train.tokens * opts.val_fraction))
        if n_val >= 2 and train.tokens - n_val >= 2:
            _move_tail_to_val(train, val, n_val)
        meta = _meta(opts, tok, dtype, train, val, documents, total_bytes, files)
        if opts.tokenizer in ("bpe", "hf"):
            tok.save(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        for item in tmp.iterdir():
            os.replace(item, out / item.name)
        tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    meta["seconds"] = round(time.perf_counter() - t0, 2)
    return meta


def _write_batch(tok, batch: list[tuple[str, bool]], writer: ShardWriter, documents: int,
                 content: int) -> tuple[int, int]:
    """Encode a batch of pieces, the end-of-document id after each document's last piece;
    returns the running counts of documents and of ids that are not end-of-document."""
    if not batch:
        return documents, content
    eos = np.array([tok.eos_id], dtype=np.uint32)
    encoded = _encode(tok, [text for text, _ in batch])
    parts = [p.astype(np.uint32, copy=False) for (_, ends), ids in zip(batch, encoded, strict=True)
             for p in ((ids, eos) if ends else (ids,))]
    writer.write(np.concatenate(parts))
    return documents + sum(ends for _, ends in batch), content + sum(len(e) for e in encoded)


def _meta(opts: PrepareOptions, tok, dtype, train: ShardWriter, val: ShardWriter,
          documents: int, total_bytes: int, files: list[Path]) -> dict:
    return {
        "format": "tengine-tokens", "version": 1, "dtype": np.dtype(dtype).name,
        "vocab_size": tok.vocab_size, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
        "tokenizer": opts.tokenizer, "tokenizer_path": opts.tokenizer_path,
        "train_tokens": train.tokens, "val_tokens": val.tokens,
        "train_shards": train.counts, "val_shards": val.counts,
        "documents": documents, "bytes": total_bytes, "text_field": opts.text_field,
        "val_fraction": opts.val_fraction, "files": len(files),
        "sources": [str(f) for f in files[:MAX_LISTED_SOURCES]],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}" + ("" if n == 1 else "s")


def summary_line(meta: dict, out: str | Path) -> str:
    return (f"prepared {_count(meta['train_tokens'] + meta['val_tokens'], 'token')} from "
            f"{_count(meta['documents'], 'document')} in {_count(meta['files'], 'file')} → {out}: "
            f"train {meta['train_tokens']:,} in {_count(len(meta['train_shards']), 'shard')}, val "
            f"{meta['val_tokens']:,} in {_count(len(meta['val_shards']), 'shard')}; "
            f"{meta['tokenizer']} tokenizer, vocab {meta['vocab_size']}, {meta['dtype']} "
            f"({meta['seconds']:.1f} s)")
