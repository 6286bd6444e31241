"""Data: sources (registry), tokenizers, datasets, collators and resumable loaders."""

from tengine.data.collators import COLLATORS, IGNORE_INDEX, build_collator
from tengine.data.loader import DataLoaderFactory, ResumableSampler
from tengine.data.markov import MarkovSource
from tengine.data.sources import SOURCES, DataBundle, build_data
from tengine.data.tokenizers import TOKENIZERS, BPETokenizer, ByteTokenizer

__all__ = ["COLLATORS", "IGNORE_INDEX", "SOURCES", "TOKENIZERS", "BPETokenizer", "ByteTokenizer",
           "DataBundle", "DataLoaderFactory", "MarkovSource", "ResumableSampler", "build_collator",
           "build_data"]
