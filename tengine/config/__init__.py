"""Typed config: schema, YAML loading with presets and overrides, the fluent builder, TaskSpec."""

from tengine.config.builder import PRESETS, TrainingConfigBuilder
from tengine.config.loader import apply_overrides, load_config, to_yaml, validate
from tengine.config.schema import TengineConfig
from tengine.config.task import TaskSpec

__all__ = ["PRESETS", "TaskSpec", "TengineConfig", "TrainingConfigBuilder", "apply_overrides",
           "load_config", "to_yaml", "validate"]
