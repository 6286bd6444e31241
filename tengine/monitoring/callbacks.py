"""The run's monitoring callbacks (rank 0, each `Guarded`: a failure is a warning).

- `ProfileWriter`: when training starts, `RUN/profile.json` (the train split's profile, drift's
  reference) and `RUN/profile_batch.npz` (the first `monitoring.reference_examples` validation
  examples, collated: the batch model-output profiles are taken on). Written once per run dir:
  a resumed run trains on the same data. When training ends, the trained model's outputs on
  that batch are added (single and ddp backends).
- `AlertCallback`: feeds every train and val record to the alert rules; its windows and best
  values are saved with each checkpoint, so a resumed run does not alert a second time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tengine.engine.callbacks import Callback
from tengine.monitoring.profiles import PROFILE_FILE, data_profile, reference_batch, save_profile

log = logging.getLogger("tengine")


class ProfileWriter(Callback):
    def __init__(self, cfg: Any, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)

    def on_fit_start(self, trainer) -> None:
        if (self.run_dir / PROFILE_FILE).is_file() and trainer.resumed_from is not None:
            return
        from tengine.data.collators import build_collator

        m, cfg = self.cfg.monitoring, self.cfg
        train = trainer.train_loader.dataset
        profile = data_profile(train, pad_id=trainer.pad_id, vocab_size=_vocab(trainer),
                               num_classes=cfg.task.num_classes, max_examples=m.profile_examples)
        profile["source"] = {"data.source": cfg.data.source, "split": "train",
                             "seq_len": cfg.data.seq_len, "task": cfg.task.type}
        batch = None
        if trainer.val_loader is not None:
            collate = build_collator(cfg.data.collator, cfg.task.type, trainer.pad_id)
            batch = reference_batch(trainer.val_loader.dataset, collate, m.reference_examples)
        save_profile(self.run_dir, profile, batch)
        log.info("profile: %d train examples in %.2f s → %s", profile["examples"],
                 profile["seconds"], self.run_dir / PROFILE_FILE)

    def on_fit_end(self, trainer, summary: dict[str, Any]) -> None:
        """The trained model's outputs on the reference batch, added to profile.json: on a
        whole-model backend only (single, ddp), where rank 0 can run its copy alone; an FSDP or
        ZeRO-3 model's forward needs every rank (`tengine drift` and export bundles compute
        the outputs from its checkpoint instead)."""
        from tengine.monitoring.profiles import (
            OUTPUT_TASKS,
            load_batch,
            load_profile,
            output_profile,
        )

        cfg = self.cfg
        if cfg.distributed.backend not in ("single", "ddp") or cfg.task.type not in OUTPUT_TASKS \
                or summary.get("status") not in ("completed", "early_stopped"):
            return
        batch = load_batch(self.run_dir)
        if not batch:
            return
        model = trainer.strategy.unwrap()
        device = next(model.parameters()).device
        outputs = output_profile(model, {k: v.to(device) for k, v in batch.items()},
                                 language_model=cfg.task.type == "language_modeling")
        profile = load_profile(self.run_dir)
        profile["outputs"] = {**outputs, "step": trainer.state.step}
        save_profile(self.run_dir, profile)


def _vocab(trainer) -> int | None:
    """The model's vocabulary: its input embedding's rows (an HF model's, or the first one)."""
    from torch import nn

    model = trainer.strategy.unwrap()
    if trainer.cfg.task.type not in ("language_modeling", "classification"):
        return None
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else \
        next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    return emb.num_embeddings if isinstance(emb, nn.Embedding) else None


class AlertCallback(Callback):
    state_key = "alerts"

    def __init__(self, cfg: Any, run_dir: Path):
        from tengine.monitoring.alerts import Alerts
        from tengine.monitoring.sinks import build_sinks

        conf = cfg.monitoring.alerts
        self.alerts = Alerts.from_config(conf, subject=f"run {cfg.name}",
                                         sinks=build_sinks(conf.sinks, Path(run_dir)))

    def on_step_end(self, trainer, record: dict[str, Any] | None) -> None:
        if record is not None:
            self.alerts.observe(record)

    def on_eval_end(self, trainer, record: dict[str, Any]) -> None:
        self.alerts.observe(record)

    def on_fit_end(self, trainer, summary: dict[str, Any]) -> None:
        self.alerts.close()

    def state_dict(self) -> dict:
        return self.alerts.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.alerts.load_state_dict(state)
