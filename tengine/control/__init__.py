"""The control plane's logic: plain classes over a store, no Ray and no torch.

Today: the store (`open_store`) and the model registry (`ModelRegistry`). The job queue, the
scheduler and the detached Ray actor that hosts them are the next steps (issue 4).
"""

from tengine.control.registry import ModelRegistry, ModelVersion
from tengine.control.store import SQLiteStore, open_store

__all__ = ["ModelRegistry", "ModelVersion", "SQLiteStore", "open_store"]
