"""Data profiling cost: `data_profile` of 1M tokens, and a drift check on them, vs one bare
`np.bincount` of the same tokens (the least any token count can cost).

    .venv/bin/python bench/profile_tokens.py [--tokens 1000000] [--repeats 5]

For a 16-symbol Markov stream and a 50,257-id (GPT-2-sized) vocabulary: the median of
`--repeats` timings of the reference profile (length histogram, token and pair counts) on the
packed stream and item by item through a plain Dataset, of the current profile on the
reference's bins plus `compare`, and of the bincount alone. Prints one
line per vocabulary; the last line is `profile_1m_tokens_s=<the slowest profile>`
(the issue's bar: < 2 s on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch.utils.data import Dataset

from tengine.data.datasets import PackedLMDataset
from tengine.monitoring import compare, data_profile


class Items(Dataset):
    """The same blocks behind a plain map-style dataset: the item-by-item path (a user's data,
    memory-mapped shards)."""

    def __init__(self, inner: Dataset):
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> dict:
        return self.inner[i]


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    slowest = 0.0
    for vocab in (16, 50_257):
        probs = rng.dirichlet(np.full(vocab, 0.3))
        ref_ds = PackedLMDataset(torch.from_numpy(rng.choice(vocab, args.tokens, p=probs)), 128)
        cur_ds = PackedLMDataset(torch.from_numpy(rng.choice(vocab, args.tokens, p=probs)), 128)
        reference = data_profile(ref_ds, vocab_size=vocab)
        prof_s = _median(lambda ds=ref_ds, v=vocab: data_profile(ds, vocab_size=v), args.repeats)
        check_s = _median(lambda r=reference, ds=cur_ds, v=vocab: compare(r, data_profile(
            ds, vocab_size=v, like=r)), args.repeats)
        items = Items(ref_ds)
        items_s = _median(lambda ds=items, v=vocab: data_profile(ds, vocab_size=v), args.repeats)
        raw = ref_ds.tokens.numpy()
        bare_s = _median(lambda r=raw, v=vocab: np.bincount(r, minlength=v), args.repeats)
        slowest = max(slowest, prof_s, items_s)
        print(f"vocab {vocab}: profile {prof_s * 1e3:.1f} ms (item by item {items_s * 1e3:.1f} "
              f"ms), profile+compare {check_s * 1e3:.1f} ms, bare bincount {bare_s * 1e3:.1f} ms "
              f"(profile / bincount {prof_s / bare_s:.1f}x) for {args.tokens:,} tokens")
    print(f"profile_1m_tokens_s={slowest:.3f}")


if __name__ == "__main__":
    main()
