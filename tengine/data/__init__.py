"""Data: sources (registry), tokenizers, datasets, collators and resumable loaders."""

from tengine.data import tokens as _tokens  # noqa: F401 — registers the `tokens` source
from tengine.data.collators import COLLATORS, IGNORE_INDEX, build_collator
from tengine.data.context import DataContext
from tengine.data.loader import DataLoaderFactory, ResumableSampler
from tengine.data.markov import MarkovSource
from tengine.data.sources import SOURCES, DataBundle, build_data, resolve_source
from tengine.data.tokenizers import TOKENIZERS, BPETokenizer, ByteTokenizer, HFTokenizer
from tengine.data.tokens import TokenShards

__all__ = ["COLLATORS", "IGNORE_INDEX", "SOURCES", "TOKENIZERS", "BPETokenizer", "ByteTokenizer",
           "DataBundle", "DataContext", "DataLoaderFactory", "HFTokenizer", "MarkovSource",
           "ResumableSampler", "TokenShards", "build_collator", "build_data", "resolve_source"]
