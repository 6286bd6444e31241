"""Fluent construction of a config in Python, starting from defaults or a preset.

    cfg = (TrainingConfigBuilder.quick_prototype()
           .with_model(size="small")
           .with_training(max_steps=500, micro_batch_size=32)
           .with_optimizer(lr=1e-3)
           .build())

Presets are the YAML files shipped in the package, `tengine/config/presets/` (the same files
`extends: presets/NAME.yaml` uses, mirrored as `configs/presets/` in the repository), so the
builder and YAML configs cannot drift apart. Every `with_*` takes the fields of one
config section as keyword arguments; `build()` validates and raises `ConfigError` naming the field.
"""

from __future__ import annotations

from typing import Any

from tengine.config.loader import PRESETS_DIR, deep_merge, load_raw, validate
from tengine.config.schema import TengineConfig
from tengine.config.task import TaskSpec
from tengine.errors import ConfigError

PRESETS = ("quick_prototype", "baseline", "production", "distributed", "low_memory")


class TrainingConfigBuilder:
    def __init__(self, base: dict[str, Any] | None = None):
        self._data: dict[str, Any] = dict(base or {})

    # --- presets ---------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> TrainingConfigBuilder:
        if name not in PRESETS:
            from tengine.registry import did_you_mean

            raise ConfigError(f"preset '{name}' unknown{did_you_mean(name, list(PRESETS))}; "
                              f"valid: {', '.join(PRESETS)}")
        return cls(load_raw(PRESETS_DIR / f"{name}.yaml"))

    @classmethod
    def quick_prototype(cls) -> TrainingConfigBuilder:
        return cls.preset("quick_prototype")

    @classmethod
    def baseline(cls) -> TrainingConfigBuilder:
        return cls.preset("baseline")

    @classmethod
    def production(cls) -> TrainingConfigBuilder:
        return cls.preset("production")

    @classmethod
    def distributed(cls) -> TrainingConfigBuilder:
        return cls.preset("distributed")

    @classmethod
    def low_memory(cls) -> TrainingConfigBuilder:
        return cls.preset("low_memory")

    # --- sections --------------------------------------------------------------------------
    def _merge(self, section: str | None, fields: dict[str, Any]) -> TrainingConfigBuilder:
        update = {section: fields} if section else fields
        self._data = deep_merge(self._data, update)
        return self

    def with_model(self, **fields: Any) -> TrainingConfigBuilder:
        return self._merge("model", fields)

    def with_dataset(self, **fields: Any) -> TrainingConfigBuilder:
        return self._merge("data", fields)

    def with_training(self, **fields: Any) -> TrainingConfigBuilder:
        return self._merge("training", fields)

    def with_optimizer(self, **fields: Any) -> TrainingConfigBuilder:
        return self._merge("optim", fields)

    def with_scheduler(self, **fields: Any) -> TrainingConfigBuilder:
        return self._merge("schedule", fields)

    def with_checkpointing(self, **fields: Any) -> TrainingConfigBuilder:
        return self._merge("checkpoint", fields)

    def with_logging(self, name: str | None = None, **fields: Any) -> TrainingConfigBuilder:
        if name is not None:
            self._merge(None, {"name": name})
        return self._merge("logging", fields)

    def with_export(self, **fields: Any) -> TrainingConfigBuilder:
        return self._merge("export", fields)

    def with_task(self, task: TaskSpec) -> TrainingConfigBuilder:
        return self._merge("task", task.to_config().model_dump(mode="json"))

    def with_hardware(self, precision: str | None = None, compile: bool | None = None,
                      **distributed: Any) -> TrainingConfigBuilder:
        """Precision, compile, and `distributed` fields (workers, backend, zero_stage, ...)."""
        top = {k: v for k, v in (("precision", precision), ("compile", compile)) if v is not None}
        self._merge(None, top)
        return self._merge("distributed", distributed)

    def with_reproducibility(self, seed: int | None = None,
                             deterministic: bool | None = None) -> TrainingConfigBuilder:
        top = {k: v for k, v in (("seed", seed), ("deterministic", deterministic)) if v is not None}
        return self._merge(None, top)

    def build(self) -> TengineConfig:
        return validate(self._data)
