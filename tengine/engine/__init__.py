"""The engine: Trainer, loops, losses, gradient monitor, checkpoints, metrics, callbacks."""

from tengine.engine.callbacks import Callback
from tengine.engine.checkpoint import CheckpointManager
from tengine.engine.losses import LOSSES, LossOutput, LossStrategy, build_loss
from tengine.engine.reporter import LocalReporter, Reporter
from tengine.engine.run import evaluate, preflight, run
from tengine.engine.trainer import Trainer

__all__ = ["LOSSES", "Callback", "CheckpointManager", "LocalReporter", "LossOutput",
           "LossStrategy", "Reporter", "Trainer", "build_loss", "evaluate", "preflight", "run"]
