"""The control plane's logic: plain classes over a store, no Ray and no torch.

The store (`open_store`: SQLite or PostgreSQL, by URI), the job queue (`JobQueue`), the
cron/interval `Scheduler`, the model registry (`ModelRegistry`) and the experiment DB
(`ExperimentDB`); `ControlPlane` (plane.py)
puts them behind one `call`, which the detached Ray actor (tengine/cluster/actor.py) and the
in-process client both use.
"""

from tengine.control.experiments import ExperimentDB, Run
from tengine.control.jobs import JOB_TYPES, Job, JobQueue
from tengine.control.registry import ModelRegistry, ModelVersion
from tengine.control.scheduler import Schedule, Scheduler
from tengine.control.store import Store, open_store

__all__ = ["ExperimentDB", "Run", "JOB_TYPES", "Job", "JobQueue", "ModelRegistry", "ModelVersion", "Schedule", "Scheduler", "Store", "open_store"]
