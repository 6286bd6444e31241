"""The `tokens` source: pre-tokenized shards, memory-mapped, for corpora bigger than memory.

    data: {source: tokens, path: data/corpus}            # a `tengine data prepare` directory
    data: {source: tokens, path: "shards/train_*.bin", val_path: "shards/val_*.bin",
           token_dtype: uint16}                          # any nanoGPT-style shards

Shards are 1-D arrays of token ids: `.npy` (dtype and length from the header) or raw `.bin`
(dtype from the `meta.json` that `data prepare` writes beside them, else `data.token_dtype`).
Nothing is concatenated or loaded: item i of `TokenShards` maps to (shard, offset) and reads
seq_len + 1 ids from that shard's memory map, converted to int64 for that item only. Blocks do
not cross shard boundaries (each shard's last < seq_len + 1 ids are not trained on: with 100M-id
shards that is nothing). Validation: `data.val_path` shards, a directory's `val_*` shards, or
the tail `data.val_fraction` of the blocks.

Memory: each process maps each shard once; after each read the pages around the block are
handed back (`madvise(MADV_DONTNEED)`, ~1 µs: they stay in the kernel's page cache, but leave
this process's resident set), so RSS stays flat however long the run. Each rank reads only the
blocks its sampler gives it.
"""

from __future__ import annotations

import glob
import json
import logging
import mmap
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tengine.config.schema import DataConfig, TaskConfig
from tengine.data.context import DataContext
from tengine.data.sources import SOURCES, DataBundle, _split_tail
from tengine.data.tokenizers import HF_CONFIG_FILE, TOKENIZER_FILE
from tengine.errors import DataError

log = logging.getLogger("tengine")
META_FILE = "meta.json"
SHARD_SUFFIXES = (".bin", ".npy")
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
WINDOW = 1 << 16  # the kernel's fault-around window (64 KB); released pages stay page cache
CAN_RELEASE = hasattr(mmap, "MADV_DONTNEED")


class Shard:
    """One file of token ids, mapped on first use (so a dataset pickles to DataLoader workers
    without its maps, and each worker maps for itself)."""

    def __init__(self, path: Path, dtype: np.dtype, offset: int, length: int):
        self.path, self.dtype, self.offset, self.length = path, np.dtype(dtype), offset, length
        self._map: mmap.mmap | None = None
        self._ids: np.ndarray | None = None

    def ids(self) -> np.ndarray:
        if self._ids is None:
            with self.path.open("rb") as fh:
                self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._ids = np.frombuffer(self._map, dtype=self.dtype, count=self.length,
                                      offset=self.offset)
        return self._ids

    def read(self, start: int, n: int) -> np.ndarray:
        """ids[start:start + n] as int64, then the pages around them handed back (the kernel
        maps up to 64 KB around a faulting page: without this each read would add 64 KB of RSS)."""
        block = self.ids()[start:start + n].astype(np.int64)
        if CAN_RELEASE:
            lo = (self.offset + start * self.dtype.itemsize) // WINDOW * WINDOW
            hi = -(-(self.offset + (start + n) * self.dtype.itemsize) // WINDOW) * WINDOW
            self._map.madvise(mmap.MADV_DONTNEED, lo, min(hi, len(self._map)) - lo)
        return block

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None, "_ids": None}


def open_shard(path: Path, dtype: str | None) -> Shard:
    """A shard's dtype, data offset and length, read from its header or size (nothing mapped)."""
    if path.suffix == ".npy":
        with path.open("rb") as fh:
            try:
                fmt = np.lib.format
                version = fmt.read_magic(fh)
                read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, _, npy_dtype = read(fh)
            except ValueError as err:
                raise DataError(f"data.path: {path} is not a valid .npy file ({err})") from None
            offset = fh.tell()
        if len(shape) != 1 or npy_dtype.kind not in "ui":
            raise DataError(f"data.path: {path} holds a {npy_dtype} array of shape {shape}; "
                            "token shards are 1-D integer arrays (uint16 or uint32)")
        return Shard(path, npy_dtype, offset, int(shape[0]))
    if dtype is None:
        raise DataError(f"data.token_dtype: {path} is a raw .bin shard with no {META_FILE} beside "
                        "it; set data.token_dtype: uint16 or uint32 (what it was written with)")
    size, item = path.stat().st_size, np.dtype(DTYPES[dtype]).itemsize
    if size % item:
        raise DataError(f"data.token_dtype: {path} is {size} bytes, not a whole number of "
                        f"{dtype} ids; is data.token_dtype right?")
    return Shard(path, DTYPES[dtype], 0, size // item)


class TokenShards(Dataset):
    """Blocks of `seq_len` + 1 ids over memory-mapped shards: item i → (shard, offset).

    `blocks` = (first, stop) selects a contiguous range of the blocks (a validation tail)."""

    def __init__(self, shards: list[Shard], seq_len: int, blocks: tuple[int, int] | None = None):
        self.seq_len = seq_len
        self.shards = [s for s in shards if s.length > seq_len]
        per_shard = np.array([(s.length - 1) // seq_len for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(per_shard)])  # first block of each shard
        first, stop = blocks or (0, int(self.starts[-1]))
        self.first, self.n_blocks = first, max(0, stop - first)
        self.tokens = int(sum(s.length for s in self.shards))

    def __len__(self) -> int:
        return self.n_blocks

    def locate(self, i: int) -> tuple[int, int]:
        """(shard index, offset of the block's first id in that shard) of item i."""
        if not 0 <= i < self.n_blocks:
            raise IndexError(f"block {i} out of range ({self.n_blocks} blocks)")
        block = self.first + i
        s = int(np.searchsorted(self.starts, block, side="right")) - 1
        return s, (block - int(self.starts[s])) * self.seq_len

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, offset = self.locate(int(i))
        block = torch.from_numpy(self.shards[s].read(offset, self.seq_len + 1))
        return {"input_ids": block[:-1], "labels": block[1:]}


def _read_meta(directory: Path) -> dict:
    file = directory / META_FILE
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"data.path: cannot read {file} ({err})") from None


def shard_files(pattern: str, field: str, split: str = "train") -> list[Path]:
    """A glob of shards, or a directory's `<split>_*` shards (else its unprefixed ones)."""
    root = Path(pattern)
    if root.is_dir():
        shards = sorted(p for p in root.iterdir() if p.suffix in SHARD_SUFFIXES and p.is_file())
        files = [p for p in shards if p.name.startswith(f"{split}_")] or \
            [p for p in shards if not p.name.startswith(("train_", "val_"))]
    else:
        files = sorted(Path(p) for p in glob.glob(pattern, recursive=True)
                       if Path(p).is_file() and Path(p).suffix in SHARD_SUFFIXES)
    if not files:
        raise DataError(f"{field}: no .bin/.npy token shards match '{pattern}'; give a glob of "
                        "shards or a `tengine data prepare` output directory")
    return files


def _dir_val_shards(path: Path) -> list[Path]:
    return sorted(p for p in path.glob("val_*") if p.suffix in SHARD_SUFFIXES) if path.is_dir() else []


def _open_all(files: list[Path], data: DataConfig) -> tuple[list[Shard], dict]:
    metas = {d: _read_meta(d) for d in {f.parent for f in files}}
    shards = []
    for f in files:
        meta_dtype = metas[f.parent].get("dtype")
        if data.token_dtype and meta_dtype and data.token_dtype != meta_dtype:
            raise DataError(f"data.token_dtype is {data.token_dtype} but {f.parent / META_FILE} "
                            f"says the shards are {meta_dtype}; drop data.token_dtype")
        shards.append(open_shard(f, data.token_dtype or meta_dtype))
    return shards, next((m for m in metas.values() if m), {})


@SOURCES.register("tokens")
def tokens(data: DataConfig, task: TaskConfig, context: DataContext) -> DataBundle:
    if task.type != "language_modeling":
        raise DataError(f"data.source 'tokens' gives token streams for language_modeling, not "
                        f"task.type '{task.type}'")
    if not data.path:
        raise DataError("data.path: the tokens source needs shards: a glob of .bin/.npy files "
                        "or a `tengine data prepare` directory")
    train_shards, meta = _open_all(shard_files(data.path, "data.path"), data)
    train = TokenShards(train_shards, data.seq_len)
    val_files = shard_files(data.val_path, "data.val_path", split="val") if data.val_path \
        else _dir_val_shards(Path(data.path))
    if val_files:
        val = TokenShards(_open_all(val_files, data)[0], data.seq_len)
    elif len(train):  # the tail val_fraction of the blocks
        cut = _split_tail(len(train), data.val_fraction)
        val = TokenShards(train_shards, data.seq_len, (cut, len(train)))
        train = TokenShards(train_shards, data.seq_len, (0, cut))
    else:  # no block at all: build_data reports the empty train split
        val = train
    _keep_tokenizer(Path(data.path), context)
    eos = meta.get("eos_id")
    return DataBundle(train, val, vocab_size=meta.get("vocab_size"),
                      pad_id=meta.get("pad_id", eos if eos is not None else 0),
                      info={"tokens": train.tokens, "shards": len(train.shards), "eos_id": eos,
                            "tokenizer": meta.get("tokenizer")})


def _keep_tokenizer(path: Path, ctx: DataContext) -> None:
    """The shards' tokenizer (from `data prepare`) goes to the run dir, so exports find it."""
    source = path if path.is_dir() else path.parent
    if not (ctx.is_main and ctx.run_dir is not None and (source / TOKENIZER_FILE).is_file()):
        return
    if not (ctx.run_dir / TOKENIZER_FILE).exists():
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        for name in (TOKENIZER_FILE, HF_CONFIG_FILE):  # tokenizer_config.json: an hf one
            if (source / name).is_file():
                shutil.copyfile(source / name, ctx.run_dir / name)
