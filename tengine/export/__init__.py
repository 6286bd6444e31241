"""The export bundle: what a serving team receives (`tengine export`, docs/export.md).

    from tengine.export import create_export_bundle, export, verify
    result = export("runs/quickstart", out="bundles/qs")   # a run, checkpoint or artifact
    verify("bundles/qs")                                   # hashes and parity again

Modules, in the order an export uses them: `source` (run / checkpoint / artifact / registry
version → one verified artifact), `model` (the artifact's model rebuilt, real validation
examples), `formats` (the registry of format builders: safetensors, pt2, onnx, torchscript),
`parity` (cases, isolated `python -I` runs, comparison, the table), `bundle` (the temporary
directory, the checks, metadata, the rename), `documents` (README, requirements, health
report), `runtime` (the bundle's own inference.py, no tengine imports), `verify`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def export(source: str | Path, out: str | Path, **options: Any) -> dict[str, Any]:
    """`tengine export SOURCE --out OUT` from Python; `options` as build_bundle takes them
    (formats, atol, opset, latency_iters, force, progress)."""
    from tengine.export.bundle import build_bundle
    from tengine.export.source import resolve

    with resolve(source) as src:
        return build_bundle(src, Path(out), **options)


def verify(bundle: str | Path, **options: Any) -> dict[str, Any]:
    from tengine.export.verify import verify as verify_bundle

    return verify_bundle(Path(bundle), **options)


def create_export_bundle(model, config, task_spec=None, training_config=None,
                         export_base_dir: str | Path = "bundles", **options: Any) -> Path:
    """The seed's API, over the same code as `tengine export`: export a model in memory.

    `config`: the run's `TengineConfig` (or a YAML path or mapping for `load_config`); None
    takes `training_config` in its place (the seed passed the training settings separately;
    a TengineConfig already holds them). `task_spec`: a `TaskSpec` whose type must be the
    config's task. The parity batches are built from the config's own data. Returns the
    bundle's directory, `<export_base_dir>/<config.name>-step_<step>`."""
    import tempfile

    from tengine.config import TengineConfig, load_config
    from tengine.engine.artifact import pack_model
    from tengine.errors import ConfigError
    from tengine.export.bundle import build_bundle
    from tengine.export.source import resolve

    cfg = config if config is not None else training_config
    if not isinstance(cfg, TengineConfig):
        cfg = load_config(cfg) if isinstance(cfg, (str, Path)) else load_config(base=dict(cfg or {}))
    if task_spec is not None and task_spec.type != cfg.task.type:
        raise ConfigError(f"create_export_bundle: task_spec.type '{task_spec.type}' is not the "
                          f"config's task.type '{cfg.task.type}'")
    step = int(options.pop("step", 0))
    with tempfile.TemporaryDirectory(prefix="tengine-export-model-") as tmp:
        info = pack_model(model, cfg, Path(tmp), step=step, run_dir=options.pop("run_dir", None))
        with resolve(info["artifact_uri"]) as src:
            src.name, src.origin = cfg.name, {"kind": "in-memory model", "name": cfg.name}
            out = Path(export_base_dir) / f"{cfg.name}-step_{step}"
            return Path(build_bundle(src, out, **options)["bundle"])
