"""Data sources: a registry of functions `(DataConfig, TaskConfig) -> DataBundle`.

    bundle = build_data(cfg.data, cfg.task)
    bundle.train, bundle.val          # torch Datasets of dicts (see tengine.data.datasets)
    bundle.vocab_size, bundle.loss_floor

Sources: `synthetic_markov` (known loss floor), `text_files` (a glob; default: this Python's
standard library), `jsonl`, `hf` (HF datasets from local files, or the hub where reachable),
`synthetic_classification` and `synthetic_images` (small seeded classification sets).
Register your own with `@SOURCES.register("name")`.
"""

from __future__ import annotations

import glob
import json
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tengine.config.schema import DataConfig, TaskConfig
from tengine.data.datasets import (
    ClassificationDataset,
    ImageDataset,
    PackedLMDataset,
    SequenceLMDataset,
)
from tengine.data.markov import MarkovSource
from tengine.data.tokenizers import build_tokenizer
from tengine.errors import DataError
from tengine.registry import Registry

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


def build_data(data: DataConfig, task: TaskConfig) -> DataBundle:
    bundle = SOURCES.get(data.source)(data, task)
    for split in ("train", "val"):
        if len(getattr(bundle, split)) == 0:
            raise DataError(f"data: the {split} split of source '{data.source}' is empty; "
                            f"add data or lower data.seq_len ({data.seq_len})")
    return bundle


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


def _read_texts(files: list[Path], max_bytes: int) -> list[str]:
    texts, total = [], 0
    for path in files:
        if total >= max_bytes:
            break
        text = path.read_bytes()[: max_bytes - total].decode("utf-8", errors="replace")
        total += len(text.encode("utf-8"))
        texts.append(text)
    return texts


def _lm_bundle(train_texts: list[str], val_texts: list[str] | None, data: DataConfig,
               info: dict) -> DataBundle:
    """Tokenize documents (EOS between them) and pack or keep them as sequences."""
    tok = build_tokenizer(data.tokenizer, train_texts, data.bpe_vocab_size)
    docs = [tok.encode(t) + [tok.eos_id] for t in train_texts]
    if val_texts is not None:
        val_docs = [tok.encode(t) + [tok.eos_id] for t in val_texts]
    elif data.pack:
        val_docs = None
    else:
        cut = min(_split_tail(len(docs), data.val_fraction), len(docs) - 1)
        if cut < 1:
            raise DataError("data: need at least 2 records to split off validation; add data "
                            "or set data.val_path")
        docs, val_docs = docs[:cut], docs[cut:]
    if data.pack:
        stream = torch.tensor([t for d in docs for t in d], dtype=torch.long)
        if val_docs is None:
            cut = _split_tail(len(stream), data.val_fraction)
            stream, val_stream = stream[:cut], stream[cut:]
        else:
            val_stream = torch.tensor([t for d in val_docs for t in d], dtype=torch.long)
        train, val = PackedLMDataset(stream, data.seq_len), PackedLMDataset(val_stream, data.seq_len)
        info["tokens"] = len(stream) + len(val_stream)
    else:
        train, val = SequenceLMDataset(docs, data.seq_len), SequenceLMDataset(val_docs, data.seq_len)
    return DataBundle(train, val, vocab_size=tok.vocab_size, pad_id=tok.pad_id, info=info)


def stdlib_glob() -> str:
    return str(Path(sysconfig.get_paths()["stdlib"]) / "*.py")


@SOURCES.register("text_files")
def text_files(data: DataConfig, task: TaskConfig) -> DataBundle:
    pattern = data.path or stdlib_glob()
    texts = _read_texts(_files(pattern, "data.path"), data.max_bytes)
    val = _read_texts(_files(data.val_path, "data.val_path"), data.max_bytes) if data.val_path else None
    return _lm_bundle(texts, val, data, {"pattern": pattern, "files": len(texts)})


def _read_jsonl(path: str, field_name: str, max_bytes: int) -> list[dict]:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{field_name}: file '{path}' does not exist")
    records, total = [], 0
    with file.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            total += len(line)
            if total >= max_bytes:
                break
    if not records:
        raise DataError(f"{field_name}: '{path}' has no records")
    return records


def _field(records: list[dict], name: str, where: str, field_name: str) -> list:
    missing = next((i for i, r in enumerate(records) if name not in r), None)
    if missing is not None:
        keys = ", ".join(sorted(records[missing])) if isinstance(records[missing], dict) else "?"
        raise DataError(f"{where}: record {missing + 1} has no field '{name}' (keys: {keys}); "
                        f"set {field_name}")
    return [r[name] for r in records]


def _records_bundle(train: list[dict], val: list[dict] | None, data: DataConfig,
                    task: TaskConfig, where: str) -> DataBundle:
    texts = [str(t) for t in _field(train, data.text_field, where, "data.text_field")]
    val_texts = [str(t) for t in _field(val, data.text_field, where, "data.text_field")] if val else None
    if task.type == "language_modeling":
        return _lm_bundle(texts, val_texts, data, {"records": len(texts)})
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
    tok = build_tokenizer(data.tokenizer, texts, data.bpe_vocab_size)

    def enc(ts: list[str]) -> list[list[int]]:
        return [tok.encode(t) for t in ts]

    def ids(vs: list) -> list[int]:
        return [index[str(v)] for v in vs]

    num_classes = task.num_classes or max(index.values()) + 1
    return DataBundle(ClassificationDataset(enc(texts), ids(labels), data.seq_len),
                      ClassificationDataset(enc(val_texts), ids(val_labels), data.seq_len),
                      vocab_size=tok.vocab_size, num_classes=num_classes, pad_id=tok.pad_id,
                      info={"records": len(texts), "labels": names})


@SOURCES.register("jsonl")
def jsonl(data: DataConfig, task: TaskConfig) -> DataBundle:
    if not data.path:
        raise DataError("data.path: the jsonl source needs a file path")
    train = _read_jsonl(data.path, "data.path", data.max_bytes)
    val = _read_jsonl(data.val_path, "data.val_path", data.max_bytes) if data.val_path else None
    return _records_bundle(train, val, data, task, data.path)


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
    records, total = [], 0
    for row in ds:
        records.append(row)
        total += len(str(row.get(data.text_field, "")))
        if total >= data.max_bytes:
            break
    return records


@SOURCES.register("hf")
def hf(data: DataConfig, task: TaskConfig) -> DataBundle:
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
    return _records_bundle(train, val, data, task, f"hf:{data.path}")


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
