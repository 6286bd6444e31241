"""Data sources: a registry of functions `(DataConfig, TaskConfig) -> DataBundle`.

    bundle = build_data(cfg.data, cfg.task)            # Python API: nothing saved or reused
    bundle = build_data(cfg.data, cfg.task, context)   # engine.run: the run's tokenizer (DataContext)
    bundle.train, bundle.val          # torch Datasets of dicts (see tengine.data.datasets)
    bundle.vocab_size, bundle.loss_floor, bundle.tokenizer

Sources: `synthetic_markov` (known loss floor), `text_files` (a glob; default: this Python's
standard library), `jsonl`, `hf` (HF datasets from local files, or the hub where reachable),
`tokens` (pre-tokenized memory-mapped shards, `tengine.data.tokens`),
`synthetic_classification` and `synthetic_images` (small seeded classification sets), or a
user's `package.module:factory`. Register your own with `@SOURCES.register("name")`; a source
that names a `context` parameter also gets the run's `DataContext`.
"""

from __future__ import annotations

import glob
import inspect
import json
import logging
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from tengine.config.schema import DataConfig, TaskConfig
from tengine.data.context import DataContext
from tengine.data.datasets import (
    ClassificationDataset,
    ImageDataset,
    PackedLMDataset,
    SequenceLMDataset,
)
from tengine.data.markov import MarkovSource
from tengine.data.tokenizers import build_tokenizer
from tengine.errors import DataError
from tengine.registry import Registry, import_path

log = logging.getLogger("tengine")
SOURCES: Registry = Registry("data source", "data.source")


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    vocab_size: int | None = None
    num_classes: int | None = None
    loss_floor: float | None = None
    pad_id: int = 0
    info: dict = field(default_factory=dict)
    tokenizer: Any = None  # the text sources' tokenizer (encode/decode), for exports and samples


def resolve_source(name: str) -> Callable:
    """The function behind `data.source`; an import path is imported now, so a typo fails early."""
    if ":" in name:
        return partial(_user_source, import_path(name, "data.source"), name)
    return SOURCES.get(name)


def build_data(data: DataConfig, task: TaskConfig, context: DataContext | None = None) -> DataBundle:
    source = resolve_source(data.source)
    wants_context = "context" in inspect.signature(source).parameters
    bundle = source(data, task, **({"context": context or DataContext()} if wants_context else {}))
    for split in ("train", "val"):
        if len(getattr(bundle, split)) == 0:
            raise DataError(f"data: the {split} split of source '{data.source}' is empty; "
                            f"add data or lower data.seq_len ({data.seq_len})")
    return bundle


# --- a user's own data: data.source "package.module:factory" --------------------------------

USER_SOURCE_ARGS = ("data", "task", "seq_len")


def _user_source(factory: Callable, name: str, data: DataConfig, task: TaskConfig) -> DataBundle:
    """Call `factory` with the arguments its signature names (`data`, `task`, `seq_len`)."""
    offered = {"data": data, "task": task, "seq_len": data.seq_len}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: call it bare
        params = {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    required = [p.name for p in params.values() if p.default is p.empty and p.name not in offered
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required:
        raise DataError(f"data.source: '{name}' needs {', '.join(required)}, which tengine does not "
                        f"pass; it passes (by name, where the signature names them) "
                        f"{', '.join(USER_SOURCE_ARGS)}")
    result = factory(**{k: v for k, v in offered.items() if k in params or takes_any})
    if isinstance(result, DataBundle):
        bundle = result
    elif isinstance(result, (tuple, list)) and len(result) == 2:
        bundle = DataBundle(train=result[0], val=result[1])
    else:
        raise DataError(f"data.source: '{name}' returned {type(result).__name__}; return a "
                        "tengine.data.DataBundle or a (train, val) tuple of datasets")
    for split in ("train", "val"):
        _check_dataset(getattr(bundle, split), split, name)
    return bundle


def _check_dataset(ds: Any, split: str, name: str) -> None:
    where = f"data.source: the {split} dataset of '{name}'"
    if isinstance(ds, IterableDataset) or not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
        raise DataError(f"{where} is a {type(ds).__name__}; tengine's resumable samplers need a "
                        "map-style dataset (with __len__ and __getitem__)")
    if len(ds) and not isinstance(item := ds[0], dict):
        raise DataError(f"{where} yields {type(item).__name__} items; items must be dicts of "
                        "tensors (input_ids/labels, pixel_values/labels: see docs/data.md)")


def _split_tail(n: int, fraction: float) -> int:
    return max(1, int(round(n * (1 - fraction))))


@SOURCES.register("synthetic_markov")
def synthetic_markov(data: DataConfig, task: TaskConfig) -> DataBundle:
    m = data.markov
    src = MarkovSource(m.vocab_size, m.order, m.concentration, m.seed)
    tokens = torch.from_numpy(src.sample(m.num_tokens))
    cut = _split_tail(len(tokens), data.val_fraction)
    return DataBundle(
        train=PackedLMDataset(tokens[:cut], data.seq_len),
        val=PackedLMDataset(tokens[cut:], data.seq_len),
        vocab_size=m.vocab_size, loss_floor=src.entropy_rate,
        info={"tokens": len(tokens), "entropy_rate_nats": src.entropy_rate})


# --- text corpora -----------------------------------------------------------------------------

def _files(pattern: str, field_name: str) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not files:
        raise DataError(f"{field_name}: no files match '{pattern}'; check the path or glob")
    return files


def _size(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{int(n)} bytes"


def warn_cut(what: str, kept: int, total: int, max_bytes: int, detail: str) -> None:
    """data.max_bytes never cuts a corpus silently."""
    log.warning("data.max_bytes %d cut %s: kept %s of %s (%.1f%%; %s); set data.max_bytes: null "
                "to read everything", max_bytes, what, _size(kept), _size(total),
                100 * kept / max(total, 1), detail)


def _read_texts(files: list[Path], max_bytes: int | None, what: str) -> list[str]:
    total = sum(f.stat().st_size for f in files)
    texts, kept = [], 0
    for path in files:
        if max_bytes is not None and kept >= max_bytes:
            break
        with path.open("rb") as fh:
            raw = fh.read() if max_bytes is None else fh.read(max_bytes - kept)
        kept += len(raw)
        texts.append(raw.decode("utf-8", errors="replace"))
    if max_bytes is not None and kept < total:
        warn_cut(what, kept, total, max_bytes, f"{len(texts)} of {len(files)} files")
    return texts


def _encode(tok, texts: list[str], ctx: DataContext, split: str) -> list[np.ndarray]:
    """Each document's ids followed by the end-of-document id, as int32 arrays (a tenth of the
    memory of Python int lists), in batches (HF tokenizers encode a batch in parallel)."""
    from tqdm.auto import tqdm

    docs, step = [], 256
    with tqdm(total=len(texts), desc=f"tokenizing {split}", unit="doc",
              disable=not ctx.progress or len(texts) < 2 * step) as bar:
        for i in range(0, len(texts), step):
            for ids in tok.encode_batch(texts[i:i + step]):
                doc = np.empty(len(ids) + 1, dtype=np.int32)
                doc[:-1], doc[-1] = ids, tok.eos_id
                docs.append(doc)
            bar.update(min(step, len(texts) - i))
    return docs


def _stream(docs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.concatenate(docs) if docs else np.zeros(0, np.int32)).long()


def _lm_bundle(train_texts: list[str], val_texts: list[str] | None, data: DataConfig,
               info: dict, ctx: DataContext) -> DataBundle:
    """Tokenize documents (EOS between them) and pack or keep them as sequences."""
    tok = build_tokenizer(data, train_texts, ctx)
    docs = _encode(tok, train_texts, ctx, "train")
    if val_texts is not None:
        val_docs = _encode(tok, val_texts, ctx, "val")
    elif data.pack:
        val_docs = None
    else:
        cut = min(_split_tail(len(docs), data.val_fraction), len(docs) - 1)
        if cut < 1:
            raise DataError("data: need at least 2 records to split off validation; add data "
                            "or set data.val_path")
        docs, val_docs = docs[:cut], docs[cut:]
    if data.pack:
        stream = _stream(docs)
        if val_docs is None:
            cut = _split_tail(len(stream), data.val_fraction)
            stream, val_stream = stream[:cut], stream[cut:]
        else:
            val_stream = _stream(val_docs)
        train, val = PackedLMDataset(stream, data.seq_len), PackedLMDataset(val_stream, data.seq_len)
        info["tokens"] = len(stream) + len(val_stream)
    else:
        train = SequenceLMDataset([d.tolist() for d in docs], data.seq_len)
        val = SequenceLMDataset([d.tolist() for d in val_docs], data.seq_len)
    info["tokenizer"] = tok.kind
    return DataBundle(train, val, vocab_size=tok.vocab_size, pad_id=tok.pad_id, info=info,
                      tokenizer=tok)


def stdlib_glob() -> str:
    return str(Path(sysconfig.get_paths()["stdlib"]) / "*.py")


@SOURCES.register("text_files")
def text_files(data: DataConfig, task: TaskConfig, context: DataContext) -> DataBundle:
    pattern = data.path or stdlib_glob()
    texts = _read_texts(_files(pattern, "data.path"), data.max_bytes, f"data.path '{pattern}'")
    val = _read_texts(_files(data.val_path, "data.val_path"), data.max_bytes,
                      f"data.val_path '{data.val_path}'") if data.val_path else None
    return _lm_bundle(texts, val, data, {"pattern": pattern, "files": len(texts)}, context)


def _read_jsonl(path: str, field_name: str, max_bytes: int | None) -> list[dict]:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{field_name}: file '{path}' does not exist")
    records, kept, lineno = [], 0, 0
    with file.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):  # noqa: B007 — lineno is read after the loop
            kept += len(raw)
            if not raw.strip():
                continue
            records.append(parse_json_line(raw, path, lineno))
            if max_bytes is not None and kept >= max_bytes:
                break
    total = file.stat().st_size
    if max_bytes is not None and kept < total:
        warn_cut(f"{field_name} '{path}'", kept, total, max_bytes, f"{len(records)} records, "
                 f"lines 1-{lineno}")
    if not records:
        raise DataError(f"{field_name}: '{path}' has no records")
    return records


def parse_json_line(raw: bytes, path: str | Path, lineno: int) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}:{lineno}: not UTF-8 text") from None


def _field(records: list[dict], name: str, where: str, field_name: str) -> list:
    missing = next((i for i, r in enumerate(records) if not isinstance(r, dict) or name not in r),
                   None)
    if missing is not None:
        keys = ", ".join(sorted(records[missing])) if isinstance(records[missing], dict) else "?"
        raise DataError(f"{where}: record {missing + 1} has no field '{name}' (keys: {keys}); "
                        f"set {field_name}")
    return [r[name] for r in records]


def _records_bundle(train: list[dict], val: list[dict] | None, data: DataConfig,
                    task: TaskConfig, where: str, ctx: DataContext) -> DataBundle:
    texts = [str(t) for t in _field(train, data.text_field, where, "data.text_field")]
    val_texts = [str(t) for t in _field(val, data.text_field, where, "data.text_field")] if val else None
    if task.type == "language_modeling":
        return _lm_bundle(texts, val_texts, data, {"records": len(texts)}, ctx)
    if task.type != "classification":
        raise DataError(f"data.source '{data.source}' gives text; task.type '{task.type}' needs "
                        "images or masks; use language_modeling or classification")
    labels = _field(train, data.label_field, where, "data.label_field")
    if val is None:
        cut = min(_split_tail(len(texts), data.val_fraction), len(texts) - 1)
        texts, val_texts, labels, val_labels = texts[:cut], texts[cut:], labels[:cut], labels[cut:]
    else:
        val_labels = _field(val, data.label_field, where, "data.label_field")
    names = sorted({str(v) for v in labels + val_labels})
    index = {n: i for i, n in enumerate(names)}
    if all(isinstance(v, int) for v in labels + val_labels):
        index = {str(v): int(v) for v in labels + val_labels}
    tok = build_tokenizer(data, texts, ctx)

    def ids(vs: list) -> list[int]:
        return [index[str(v)] for v in vs]

    num_classes = task.num_classes or max(index.values()) + 1
    return DataBundle(ClassificationDataset(tok.encode_batch(texts), ids(labels), data.seq_len),
                      ClassificationDataset(tok.encode_batch(val_texts), ids(val_labels), data.seq_len),
                      vocab_size=tok.vocab_size, num_classes=num_classes, pad_id=tok.pad_id,
                      info={"records": len(texts), "labels": names, "tokenizer": tok.kind},
                      tokenizer=tok)


@SOURCES.register("jsonl")
def jsonl(data: DataConfig, task: TaskConfig, context: DataContext) -> DataBundle:
    if not data.path:
        raise DataError("data.path: the jsonl source needs a file path")
    train = _read_jsonl(data.path, "data.path", data.max_bytes)
    val = _read_jsonl(data.val_path, "data.val_path", data.max_bytes) if data.val_path else None
    return _records_bundle(train, val, data, task, data.path, context)


HF_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".txt": "text",
                    ".parquet": "parquet"}


def _hf_records(datasets, path: str, data: DataConfig, field_name: str) -> list[dict]:
    builder = HF_FILE_BUILDERS.get(Path(path).suffix)
    try:
        if builder:
            _files(path, field_name)
            ds = datasets.load_dataset(builder, data_files=path, split=data.hf_split)
        else:
            ds = datasets.load_dataset(path, split=data.hf_split)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 — hub/network/format errors become one clear line
        raise DataError(f"{field_name}: cannot load HF dataset '{path}' "
                        f"(split {data.hf_split!r}): {type(err).__name__}: {err}") from None
    records, kept = [], 0
    for row in ds:
        records.append(row)
        kept += len(str(row.get(data.text_field, "")))
        if data.max_bytes is not None and kept >= data.max_bytes:
            break
    if data.max_bytes is not None and len(records) < len(ds):
        log.warning("data.max_bytes %d cut %s '%s': kept %d of %d records (%s of text); set "
                    "data.max_bytes: null to read everything", data.max_bytes, field_name, path,
                    len(records), len(ds), _size(kept))
    return records


@SOURCES.register("hf")
def hf(data: DataConfig, task: TaskConfig, context: DataContext) -> DataBundle:
    """HF `datasets`: local files by extension (json/jsonl/csv/txt/parquet), else a hub name."""
    if not data.path:
        raise DataError("data.path: the hf source needs a dataset name or data files")
    try:
        import datasets
    except ImportError:
        raise DataError("data.source 'hf' needs the `datasets` package: "
                        "pip install 'tengine[hf]'") from None
    train = _hf_records(datasets, data.path, data, "data.path")
    val = _hf_records(datasets, data.val_path, data, "data.val_path") if data.val_path else None
    return _records_bundle(train, val, data, task, f"hf:{data.path}", context)


# --- synthetic classification sets (tests, examples) ------------------------------------------

@SOURCES.register("synthetic_classification")
def synthetic_classification(data: DataConfig, task: TaskConfig) -> DataBundle:
    """Token sequences whose class sets the token distribution: learnable by bag-of-words."""
    rng = np.random.default_rng(data.markov.seed)
    k, vocab = task.num_classes or 4, data.markov.vocab_size * 4
    profiles = rng.dirichlet(np.full(vocab, 0.5), size=k)
    labels = rng.integers(0, k, size=data.num_samples)
    seqs = [rng.choice(vocab, size=data.seq_len, p=profiles[c]).tolist() for c in labels]
    cut = _split_tail(len(seqs), data.val_fraction)
    return DataBundle(ClassificationDataset(seqs[:cut], labels[:cut].tolist(), data.seq_len),
                      ClassificationDataset(seqs[cut:], labels[cut:].tolist(), data.seq_len),
                      vocab_size=vocab, num_classes=k)


@SOURCES.register("synthetic_images")
def synthetic_images(data: DataConfig, task: TaskConfig) -> DataBundle:
    """3×S×S images: one smooth random pattern per class plus noise."""
    gen = torch.Generator().manual_seed(data.markov.seed)
    k, s = task.num_classes or 4, data.image_size
    patterns = torch.nn.functional.interpolate(torch.randn(k, 3, 4, 4, generator=gen), size=(s, s),
                                               mode="bilinear", align_corners=False)
    labels = torch.randint(0, k, (data.num_samples,), generator=gen)
    images = patterns[labels] + 0.8 * torch.randn(data.num_samples, 3, s, s, generator=gen)
    cut = _split_tail(len(labels), data.val_fraction)
    return DataBundle(ImageDataset(images[:cut], labels[:cut]), ImageDataset(images[cut:], labels[cut:]),
                      num_classes=k)
