"""The control plane's logic: plain classes over a store, no Ray and no torch.

Today: the store (`open_store`), the job queue (`JobQueue`), the cron/interval `Scheduler` and
the model registry (`ModelRegistry`). The dispatcher, the detached Ray actor that hosts them,
the client and the CLI are the next steps (issue 4).
"""

from tengine.control.jobs import JOB_TYPES, Job, JobQueue
from tengine.control.registry import ModelRegistry, ModelVersion
from tengine.control.scheduler import Schedule, Scheduler
from tengine.control.store import SQLiteStore, open_store

__all__ = ["JOB_TYPES", "Job", "JobQueue", "ModelRegistry", "ModelVersion", "Schedule", "Scheduler", "SQLiteStore", "open_store"]
