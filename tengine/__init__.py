"""tengine: a training engine for PyTorch. One YAML config, from a laptop CPU to a cluster.

    from tengine import Trainer, TrainingConfigBuilder, TaskSpec
"""

from tengine.config import TaskSpec, TengineConfig, TrainingConfigBuilder, load_config
from tengine.errors import ConfigError, TengineError

__version__ = "0.1.0"


def __getattr__(name: str):  # the engine imports torch: load it on first use, not on import
    if name in ("Trainer", "run"):
        from tengine import engine

        return getattr(engine, name)
    if name == "connect":
        from tengine.cluster.client import connect

        return connect
    raise AttributeError(f"module 'tengine' has no attribute {name!r}")


__all__ = ["ConfigError", "TaskSpec", "TengineConfig", "TengineError", "Trainer",
           "TrainingConfigBuilder", "connect", "load_config", "run"]
