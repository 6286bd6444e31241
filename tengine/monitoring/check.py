"""A drift check: a reference (run, bundle or registered model) against a current data config.

    with reference("runs/v1") as ref:                 # or "bundles/v1", or NAME:ALIAS (client)
        result = check(ref, load_config("new_data.yaml"), settings)
    result.report["status"], result.reference, result.current

The current data is built with the reference's own tokenizer (its ids are the ones the model
knows) and the reference's task and sequence length; only the current config's `data` section is
used. Its train
split is profiled on the reference's bins. Where the reference has a model (a run's best
checkpoint, a bundle's weights, a registered version), its outputs are profiled too: on the
reference batch the reference saved, and on the first examples of the current data.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tengine.errors import ConfigError
from tengine.monitoring.drift import DriftSettings, compare
from tengine.monitoring.profiles import (
    OUTPUT_TASKS,
    PROFILE_FILE,
    data_profile,
    load_batch,
    load_profile,
    output_profile,
    reference_batch,
)


@dataclass
class Reference:
    label: str  # what was asked for, for the report
    kind: str  # run | bundle | registry
    profile: dict
    config: Any  # TengineConfig of the reference
    home: Path  # holds its config.yaml, tokenizer files, profile_batch.npz
    weights: Path | None  # model weights (None: no model, data drift only)
    model_args: dict | None = None  # a bundle's (vocab, classes, pad id, seq len)


def is_model_ref(spec: str) -> bool:
    """NAME:REF of a registered model, not a path (a run dir or bundle that exists wins)."""
    return ":" in spec and not Path(spec).exists() and "/" not in spec.split(":")[0]


@contextlib.contextmanager
def reference(spec: str, client_factory=None) -> Iterator[Reference]:
    """RUN dir, BUNDLE dir, or MODEL:REF (a registry version; `client_factory()` gives the
    control-plane client)."""
    from tengine.config import load_config
    from tengine.engine.artifact import WEIGHTS

    if is_model_ref(spec):
        name, _, ref = spec.partition(":")
        if client_factory is None:
            raise ConfigError(f"drift: --reference {spec} names a registered model; no control "
                              "plane was given")
        from tengine.control.artifacts import use_version

        version = client_factory().registry.get(name, int(ref) if ref.isdigit() else ref)
        home = use_version(version)  # sha256 checked
        yield Reference(f"{name} v{version.version} ({spec})", "registry", load_profile(home),
                        load_config(home / "config.yaml"), home, home / WEIGHTS)
        return
    path = Path(spec)
    if (path / "metadata.json").is_file():  # an export bundle
        meta = json.loads((path / "metadata.json").read_text())
        yield Reference(f"bundle {path}", "bundle", load_profile(path),
                        load_config(path / "config.yaml"), path, path / "model.safetensors",
                        meta.get("model", {}).get("args"))
        return
    if (path / "config.yaml").is_file() and (path / PROFILE_FILE).is_file():
        profile, cfg = load_profile(path), load_config(path / "config.yaml")
        if not (path / "checkpoints").is_dir():
            yield Reference(f"run {path}", "run", profile, cfg, path, None)
            return
        from tengine.export.source import resolve

        with resolve(path) as src:  # the run's best checkpoint, packed (verified)
            yield Reference(f"run {path} (step {src.step})", "run", profile, cfg, path,
                            src.artifact / WEIGHTS)
        return
    if not path.exists():
        raise ConfigError(f"drift: --reference '{spec}' does not exist; give a run dir, an "
                          "export bundle or MODEL:ALIAS")
    load_profile(path)  # raises, naming what is missing
    raise ConfigError(f"drift: --reference '{spec}' has a profile but no config.yaml")


@dataclass
class CheckResult:
    report: dict
    reference: dict  # the reference profile (with outputs when a model was there)
    current: dict  # the current profile


def check(ref: Reference, current_cfg: Any, settings: DriftSettings,
          outputs: bool = True) -> CheckResult:
    from tengine.data import build_data
    from tengine.data.collators import build_collator
    from tengine.data.context import DataContext
    from tengine.engine.seeding import seed_everything

    # the reference's seq_len: examples are cut as the model was trained and profiled on
    data_cfg = current_cfg.data.model_copy(update={"seq_len": ref.config.data.seq_len})
    cfg = ref.config.model_copy(update={"data": data_cfg})
    seed_everything(cfg.seed, False)
    data = build_data(cfg.data, cfg.task, DataContext(run_dir=None, saved=ref.home))
    tokens = ref.profile["features"].get("tokens", {})
    current = data_profile(data.train, pad_id=data.pad_id, vocab_size=tokens.get("vocab_size"),
                           num_classes=cfg.task.num_classes, like=ref.profile,
                           max_examples=ref.config.monitoring.profile_examples)
    reference_profile = dict(ref.profile)
    if outputs and ref.weights is not None and cfg.task.type in OUTPUT_TASKS:
        batch = load_batch(ref.home)
        if batch is not None:
            model = _model(ref, cfg, data)
            lm = cfg.task.type == "language_modeling"
            collate = build_collator(cfg.data.collator, cfg.task.type, data.pad_id)
            n = len(next(iter(batch.values())))
            # recomputed with the model in hand (a run's stored outputs are its last step's,
            # this is its best checkpoint): both sides from the same weights
            reference_profile["outputs"] = output_profile(model, batch, language_model=lm)
            cur_batch = reference_batch(data.train, collate, n)
            current["outputs"] = output_profile(
                model, cur_batch, language_model=lm,
                like=reference_profile["outputs"]["mean_probs"])
    report = compare(reference_profile, current, settings)
    return CheckResult(report, reference_profile, current)


def _model(ref: Reference, cfg: Any, data: Any):
    from tengine.export.model import build

    args = ref.model_args or {"vocab_size": data.vocab_size,
                              "num_classes": cfg.task.num_classes or data.num_classes,
                              "pad_id": data.pad_id, "seq_len": cfg.data.seq_len}
    if ref.kind == "bundle" and cfg.model.name == "hf":  # save_pretrained layout in the bundle
        from tengine.export.model import rebuild

        return rebuild(ref.home, {"model": {"args": args}})
    return build(cfg, args, ref.weights)
