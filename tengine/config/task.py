"""TaskSpec: what is learned, as a small value object the Trainer and the builder share.

    TaskSpec.language_modeling()
    TaskSpec.classification(num_classes=4, class_weights=[1, 1, 2, 2], label_smoothing=0.1)
    TaskSpec.vision_classification(num_classes=10)

A TaskSpec is the `task` section of the config in another form; `apply(cfg)` writes it back, so
the config stays the one source of truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tengine.config.schema import TaskConfig, TengineConfig


@dataclass(frozen=True)
class TaskSpec:
    type: str = "language_modeling"
    loss: str | None = None
    num_classes: int | None = None
    class_weights: tuple[float, ...] | None = None
    label_smoothing: float = 0.0

    @classmethod
    def language_modeling(cls, loss: str | None = None) -> TaskSpec:
        return cls("language_modeling", loss=loss)

    @classmethod
    def classification(cls, num_classes: int, class_weights: list[float] | None = None,
                       label_smoothing: float = 0.0, loss: str | None = None) -> TaskSpec:
        return cls("classification", loss, num_classes,
                   tuple(class_weights) if class_weights else None, label_smoothing)

    @classmethod
    def vision_classification(cls, num_classes: int, label_smoothing: float = 0.0,
                              loss: str | None = None) -> TaskSpec:
        return cls("vision_classification", loss, num_classes, None, label_smoothing)

    @classmethod
    def from_config(cls, task: TaskConfig) -> TaskSpec:
        weights = tuple(task.class_weights) if task.class_weights else None
        return cls(task.type, task.loss, task.num_classes, weights, task.label_smoothing)

    def to_config(self) -> TaskConfig:
        data = asdict(self)
        if data["class_weights"] is not None:
            data["class_weights"] = list(data["class_weights"])
        return TaskConfig(**data)

    def apply(self, cfg: TengineConfig) -> TengineConfig:
        """A copy of `cfg` whose task section is this spec (validated)."""
        from tengine.config.loader import validate

        data = cfg.model_dump(mode="json")
        data["task"] = self.to_config().model_dump(mode="json")
        return validate(data)
