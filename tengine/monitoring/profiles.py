"""Profiles: what a dataset (and a model's outputs on it) look like, as JSON drift is measured on.

    prof = data_profile(bundle.train, pad_id=0)             # text: lengths, tokens, labels
    prof = data_profile(images, like=reference)             # on the reference's bins
    prof["outputs"] = output_profile(model, batch)          # mean predicted distribution, entropy
    save_profile(run_dir, prof, batch)                      # RUN/profile.json (+ the batch, npz)

Text: a histogram of sequence lengths (non-padding tokens per example, on fixed edges 0 … the
longest), token counts (the top `top_k` ids by count, the rest in one `other` bin, ids past the
vocabulary in `oov`), adjacent-token-pair counts (the same way), and the label distribution of classification sets. Vision: per-channel
mean and standard deviation, and a histogram of per-image mean brightness. A profile built
`like=` a reference uses the reference's edges and token ids, so the two compare bin for bin.

Fast paths read the tensors behind tengine's own datasets (one `bincount` over a packed token
stream: 1M tokens in milliseconds, `bench/profile_tokens.py`); any other map-style dataset (a
memory-mapped corpus) is read item by item, at most `max_examples` of them spread evenly over
its length, a chunk at a time: memory holds the counts, not the examples.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

FORMAT, VERSION = "tengine-profile", 1
PROFILE_FILE, BATCH_FILE = "profile.json", "profile_batch.npz"  # the run dir's and a bundle's
TOP_K = 256  # token ids kept by name; the rest are one `other` bin
LENGTH_BINS = BRIGHTNESS_BINS = 20
OUTPUT_TOP_K = 256
# tasks whose logits are one softmax distribution per position or example (segmentation's are
# per pixel, multilabel's independent sigmoids: no output profile for them)
OUTPUT_TASKS = ("language_modeling", "classification", "vision_classification")
PAIR_BUCKETS = 1 << 20  # token pairs past this many (vocab² > 2^20) are hashed into it


def _hist(values: np.ndarray, edges: np.ndarray) -> list[int]:
    """Counts on `edges`; values outside the outer edges go to the first/last bin."""
    clipped = np.clip(values, edges[0], edges[-1])
    return np.histogram(clipped, bins=edges)[0].astype(int).tolist()


def _length_edges(longest: int) -> np.ndarray:
    return np.unique(np.linspace(0, max(longest, 1), LENGTH_BINS + 1).round()).astype(float)


def _token_feature(counts: np.ndarray, vocab_size: int | None, like: dict | None) -> dict:
    """Counts of the kept ids (the reference's, or this data's top TOP_K), other, oov."""
    in_vocab = counts if vocab_size is None else counts[:vocab_size]
    oov = 0 if vocab_size is None else int(counts[vocab_size:].sum())
    padded = np.zeros(max(len(in_vocab), 1 + max(like["ids"], default=0) if like else 0), np.int64)
    padded[:len(in_vocab)] = in_vocab
    own_top = np.lexsort((np.arange(len(padded)), -padded))[:TOP_K]
    own_top = [int(i) for i in own_top if padded[i] > 0]
    ids = list(like["ids"]) if like else own_top
    kept = padded[ids] if ids else np.zeros(0, np.int64)
    return {"kind": "tokens", "vocab_size": vocab_size, "ids": ids,
            "counts": kept.astype(int).tolist(), "other": int(padded.sum() - kept.sum()),
            "oov": oov, "top": own_top[:TOP_K], "total": int(counts.sum())}


def _pair_ids(a: np.ndarray, b: np.ndarray, vocab_size: int | None) -> np.ndarray:
    """Ids of adjacent token pairs (a, b): a·V + b when V² fits the buckets, else a hash (the
    reference's vocabulary size decides, so both sides of a comparison agree)."""
    a, b = a.astype(np.int64), b.astype(np.int64)
    if vocab_size and vocab_size * vocab_size <= PAIR_BUCKETS:
        return a * vocab_size + b
    return (a * 1_000_003 + b) % PAIR_BUCKETS


def _add(total: np.ndarray | None, ids: np.ndarray, minlength: int = 0) -> np.ndarray:
    counts = np.bincount(ids, minlength=minlength) if len(ids) else np.zeros(minlength, np.int64)
    if total is None:
        return counts
    if len(counts) > len(total):
        counts[:len(total)] += total
        return counts
    total[:len(counts)] += counts
    return total


class _TextCounts:
    """Token counts, pair counts, lengths and labels, accumulated a chunk at a time: memory is
    the counts, never the examples (a 100M-token corpus is profiled in flat memory)."""

    def __init__(self, vocab_size: int | None):
        self.v = vocab_size
        self.tokens: np.ndarray | None = None
        self.pairs: np.ndarray | None = None
        self.lengths: list[np.ndarray] = []
        self.labels: list[int] | None = []
        self.n_tokens = 0

    def add(self, seqs: list[np.ndarray], labels: list | None = None) -> None:
        """`seqs`: each example's tokens (padding removed); pairs only inside an example."""
        if not seqs:
            return
        flat = np.concatenate(seqs).astype(np.int64)
        self.tokens = _add(self.tokens, flat, self.v or 0)
        self.n_tokens += len(flat)
        long = [x for x in seqs if len(x) > 1]
        if long:
            pair_ids = _pair_ids(np.concatenate([x[:-1] for x in long]),
                                 np.concatenate([x[1:] for x in long]), self.v)
            self.pairs = _add(self.pairs, pair_ids)
        self.lengths.append(np.array([len(x) for x in seqs]))
        if labels is None or self.labels is None:
            self.labels = None
        else:
            self.labels += labels

    def stream(self, tokens: np.ndarray, n_examples: int, seq_len: int) -> None:
        """One packed stream: its pairs run across block boundaries, as the model reads it."""
        tokens = tokens.astype(np.int64)
        self.tokens = _add(self.tokens, tokens, self.v or 0)
        self.n_tokens += len(tokens)
        if len(tokens) > 1:
            self.pairs = _add(self.pairs, _pair_ids(tokens[:-1], tokens[1:], self.v))
        self.lengths.append(np.full(n_examples, seq_len))
        self.labels = None


CHUNK = 1024  # examples read between two count updates


def _spread(n: int, cap: int) -> np.ndarray:
    """`cap` indices spread evenly over 0..n-1 (all of them when n ≤ cap): a corpus profiled
    by a sample of its whole length, not by its first pages."""
    return np.arange(n) if n <= cap else np.unique(np.linspace(0, n - 1, cap).round().astype(int))


def _text_counts(dataset, pad_id: int, max_examples: int, vocab_size: int | None) -> _TextCounts:
    from tengine.data.datasets import ClassificationDataset, PackedLMDataset, SequenceLMDataset

    acc = _TextCounts(vocab_size)
    if isinstance(dataset, PackedLMDataset) and len(dataset) <= max_examples:
        n = len(dataset)  # blocks of seq_len over one stream: the stream itself
        acc.stream(dataset.tokens[: n * dataset.seq_len + 1].numpy(), n, dataset.seq_len)
        return acc
    if isinstance(dataset, (SequenceLMDataset, ClassificationDataset)):
        index = _spread(len(dataset), max_examples)
        for lo in range(0, len(index), CHUNK):
            part = index[lo:lo + CHUNK]
            seqs = [np.asarray(dataset.sequences[i], np.int64) for i in part]
            if isinstance(dataset, SequenceLMDataset):
                seqs = [x[:-1] for x in seqs]  # the inputs (the last token is only a target)
            labels = [int(dataset.labels[i]) for i in part] \
                if isinstance(dataset, ClassificationDataset) else None
            acc.add(seqs, labels)
        return acc
    index = _spread(len(dataset), max_examples)
    for lo in range(0, len(index), CHUNK):
        items = [dataset[int(i)] for i in index[lo:lo + CHUNK]]
        seqs = []
        for it in items:  # items are not padded yet (the collator pads): keep every id,
            ids = np.asarray(it["input_ids"]).reshape(-1)  # but a mask the item carries
            if "attention_mask" in it:
                ids = ids[np.asarray(it["attention_mask"]).reshape(-1).astype(bool)]
            seqs.append(ids)
        scalar = [it.get("labels") for it in items]
        labels = [int(x) for x in scalar] if all(
            x is not None and np.ndim(x) == 0 for x in scalar) else None
        acc.add(seqs, labels)
    return acc


def _labels_feature(labels: np.ndarray, like: dict | None, num_classes: int | None) -> dict:
    n = max(int(labels.max()) + 1 if len(labels) else 0, num_classes or 0,
            len(like["counts"]) if like else 0)
    return {"kind": "categorical", "counts": np.bincount(labels, minlength=n).astype(int).tolist()}


def _image_features(dataset, max_examples: int, like: dict | None) -> tuple[dict, int]:
    """Per-channel moments and per-image brightness, a chunk of images at a time (memory is
    the sums and one number per image, never the images)."""
    import torch

    from tengine.data.datasets import ImageDataset

    index = _spread(len(dataset), max_examples)
    total = total_sq = None
    pixels, brightness = 0, []
    for lo in range(0, len(index), CHUNK):
        part = index[lo:lo + CHUNK]
        if isinstance(dataset, ImageDataset):
            images = dataset.images[torch.from_numpy(part)].double().numpy()
        else:
            images = np.stack([np.asarray(dataset[int(i)]["pixel_values"], np.float64)
                               for i in part])
        flat = images.transpose(1, 0, 2, 3).reshape(images.shape[1], -1)
        total = flat.sum(1) if total is None else total + flat.sum(1)
        total_sq = (flat ** 2).sum(1) if total_sq is None else total_sq + (flat ** 2).sum(1)
        pixels += flat.shape[1]
        brightness.append(images.reshape(len(images), -1).mean(axis=1))
    values = np.concatenate(brightness) if brightness else np.zeros(0)
    mean = total / max(pixels, 1) if total is not None else np.zeros(1)
    std = np.sqrt(np.maximum(total_sq / max(pixels, 1) - mean ** 2, 0.0)) \
        if total_sq is not None else np.zeros(1)
    if like:
        edges = np.asarray(like["brightness"]["edges"])
    else:  # the reference's central 99 % over the bins, its tails in the outer bins
        lo, hi = np.quantile(values, [0.005, 0.995]) if len(values) else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, BRIGHTNESS_BINS + 1)
    return {"channels": {"kind": "moments", "mean": mean.tolist(), "std": std.tolist()},
            "brightness": {"kind": "histogram", "edges": edges.tolist(),
                           "counts": _hist(values, edges)}}, len(values)


def _labels_of(dataset, max_examples: int) -> np.ndarray:
    index = _spread(len(dataset), max_examples)
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(labels)[index].astype(np.int64)
    return np.array([int(dataset[int(i)]["labels"]) for i in index])


def is_image_dataset(dataset) -> bool:
    return len(dataset) > 0 and "pixel_values" in dataset[0]


def data_profile(dataset, *, pad_id: int = 0, vocab_size: int | None = None,
                 num_classes: int | None = None, like: dict | None = None,
                 max_examples: int = 20_000) -> dict[str, Any]:
    """The profile of a map-style dataset of dicts (at most `max_examples` of its examples,
    spread evenly over it)."""
    started = time.perf_counter()
    ref = (like or {}).get("features", {})
    if is_image_dataset(dataset):
        features, n = _image_features(dataset, max_examples, ref or None)
        labels = _labels_of(dataset, max_examples)
        kind, n_tokens = "vision", None
    else:
        acc = _text_counts(dataset, pad_id, max_examples, vocab_size)
        lengths = np.concatenate(acc.lengths) if acc.lengths else np.zeros(0, int)
        labels = np.asarray(acc.labels) if acc.labels else None
        edges = np.asarray(ref["length"]["edges"]) if "length" in ref else \
            _length_edges(int(lengths.max()) if len(lengths) else 1)
        counts = acc.tokens if acc.tokens is not None else np.zeros(vocab_size or 1, np.int64)
        pairs = acc.pairs if acc.pairs is not None else np.zeros(1, np.int64)
        features = {"length": {"kind": "histogram", "edges": edges.tolist(),
                               "counts": _hist(lengths, edges)},
                    "tokens": _token_feature(counts, vocab_size, ref.get("tokens")),
                    # the order of tokens, which unigram counts cannot see: a source with the
                    # same symbols in other sequences moves this histogram, not that one
                    "bigrams": _token_feature(pairs, None, ref.get("bigrams"))}
        kind, n, n_tokens = "text", len(lengths), acc.n_tokens
    if labels is not None and len(labels):
        features["labels"] = _labels_feature(labels, ref.get("labels"), num_classes)
    return {"format": FORMAT, "version": VERSION, "kind": kind, "examples": int(n),
            "size": len(dataset),  # all of it: `examples` is what was profiled (a sample)
            "tokens": n_tokens, "features": features,
            "seconds": round(time.perf_counter() - started, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


LOGIT_BUDGET = 1 << 24  # float32 logits per forward (64 MB; ×3 with log-probs and probs)


def output_profile(model, batch: dict, *, language_model: bool, like: dict | None = None,
                   chunk: int | None = None) -> dict[str, Any]:
    """The model's mean predicted distribution over `batch` (positions that are not padding,
    for a language model) and each example's mean predictive entropy (nats)."""
    import torch

    from tengine.engine.trainer import accepted_inputs, logits_of, model_inputs

    accepted = accepted_inputs(model)
    n = len(next(iter(batch.values()))) if batch else 0
    if n == 0:
        raise ValueError("an output profile needs at least one example")
    total, weight, entropies = None, 0.0, []
    if chunk is None:  # examples per forward: a GPT-2 at T=1024 runs one, a tiny model many
        first = next(iter(batch.values()))
        positions = first.shape[1] if language_model and first.dim() > 1 else 1
        heads = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
        vocab = heads[-1] if heads else 50_000  # the output layer's width (the logits')
        chunk = max(1, min(256, LOGIT_BUDGET // (positions * vocab)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for lo in range(0, n, chunk):
                part = {k: v[lo:lo + chunk] for k, v in batch.items()}
                logits = logits_of(model(**model_inputs(part, accepted))).float()
                logp = torch.log_softmax(logits, dim=-1)
                p = logp.exp()
                ent = -(p * logp).sum(-1)  # [B, T] or [B]
                if language_model:
                    mask = (part["labels"] != -100) if "labels" in part else \
                        torch.ones(ent.shape, dtype=torch.bool, device=ent.device)
                    per_example = (ent * mask).sum(1) / mask.sum(1).clamp(min=1)
                    probs = (p * mask[..., None]).sum((0, 1))
                    weight += float(mask.sum())
                else:
                    per_example, probs = ent, p.sum(0)
                    weight += len(ent)
                entropies += per_example.tolist()
                total = probs if total is None else total + probs
    finally:
        model.train(was_training)
    mean = (total / max(weight, 1.0)).cpu().numpy()
    if like:
        ids = list(like["ids"])
    else:
        ids = [int(i) for i in np.argsort(-mean, kind="stable")[:OUTPUT_TOP_K]]
    kept = mean[ids]
    return {"examples": n, "mean_probs": {"kind": "probabilities", "ids": ids,
                                          "probs": kept.tolist(),
                                          "other": float(max(1.0 - kept.sum(), 0.0))},
            "entropy": {"kind": "samples", "values": [round(e, 6) for e in entropies]}}


def reference_batch(dataset, collate, n: int) -> dict:
    """The first `n` examples of `dataset`, collated: the batch output profiles are taken on."""
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    batch = collate(items) if items else {}
    return {k: v for k, v in batch.items() if hasattr(v, "shape")}


def save_profile(directory: str | Path, profile: dict, batch: dict | None = None) -> Path:
    """profile.json (and the reference batch as profile_batch.npz) into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if batch:
        tmp = directory / f".{BATCH_FILE}.tmp"
        with tmp.open("wb") as fh:
            np.savez_compressed(fh, **{k: np.asarray(v) for k, v in batch.items()})
        tmp.replace(directory / BATCH_FILE)
    path = directory / PROFILE_FILE
    tmp = directory / f".{PROFILE_FILE}.tmp"
    tmp.write_text(json.dumps(profile, indent=1))
    tmp.replace(path)
    return path


def load_profile(path: str | Path) -> dict:
    from tengine.errors import ConfigError

    path = Path(path)
    if path.is_dir():
        path = path / PROFILE_FILE
    if not path.is_file():
        raise ConfigError(f"drift: no profile at {path}; a run writes RUN/{PROFILE_FILE} when "
                          "its data is built (monitoring.profile: true), and export bundles "
                          "carry one")
    profile = json.loads(path.read_text())
    if profile.get("format") != FORMAT:
        raise ConfigError(f"drift: {path} is not a tengine profile (format "
                          f"{profile.get('format')!r})")
    return profile


def load_batch(directory: str | Path) -> dict | None:
    import torch

    path = Path(directory) / BATCH_FILE
    if not path.is_file():
        return None
    with np.load(path) as npz:
        return {k: torch.from_numpy(npz[k]) for k in npz.files}
