"""A registry artifact: a run's checkpoint packed into a self-contained, immutable model directory.

    info = pack(Path("runs/q/checkpoints/step_00000400"), Path("/registry/artifacts/mymodel"))
    # → /registry/artifacts/mymodel/<sha256 of its manifest>/ with
    #   model.safetensors   consolidated weights, one file, from any backend (single, ddp: copied;
    #                       fsdp DCP shards, DeepSpeed ZeRO partitions: gathered to one rank)
    #   config.yaml         the run's resolved config (backend single: the weights are one file)
    #   tokenizer.json …    the run's saved tokenizer, where it has one
    #   manifest.json       kind "model", step and metrics of *this* checkpoint, sha256/size of
    #                       every file; its own sha256 is the version's identity

No optimizer state: an artifact is for evaluation, export, serving and warm starts, not for
resuming the run. The directory is named by its content hash, so packing the same checkpoint
twice gives the same directory (the second is a no-op) and nothing in it is ever rewritten.
It is written under a temporary name and renamed into place complete. A run dir's retention,
its archiving on a fresh start or `make clean` cannot touch it. `tengine.files.verify_artifact`
(no torch) checks one before every use.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from tengine.engine.checkpoint import MANIFEST, read_manifest, verify
from tengine.errors import ArtifactMismatch, CheckpointError
from tengine.files import sha256_file

KIND = "model"
WEIGHTS = "model.safetensors"
PROFILE_FILES = ("profile.json", "profile_batch.npz")  # the data profile drift compares with (RUN/)


def is_artifact(path: Path) -> bool:
    manifest = Path(path) / MANIFEST
    return manifest.is_file() and json.loads(manifest.read_text()).get("kind") == KIND


def _weights(checkpoint: Path, out: Path) -> None:
    """The checkpoint's weights as one safetensors file (tied tensors stored once)."""
    if (checkpoint / WEIGHTS).is_file():  # single / ddp: already one unsharded file
        shutil.copyfile(checkpoint / WEIGHTS, out)
        return
    from tengine.engine.weights import load_weights

    _save_state(load_weights(checkpoint), out)


def _save_state(state: dict, out: Path) -> None:
    from safetensors.torch import save_file

    kept, seen = {}, set()
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tuple(tensor.shape)) if tensor.numel() else (name,)
        if key not in seen:  # a tied weight gathered as one tensor under two names
            seen.add(key)
            kept[name] = tensor.detach().cpu().contiguous()
    save_file(kept, str(out), metadata={"format": "pt"})


def _config(run_dir: Path, checkpoint: Path, out: Path) -> None:
    import yaml

    source = run_dir / "config.yaml"
    if not source.is_file():
        raise CheckpointError(f"cannot pack {checkpoint}: its run dir {run_dir} has no config.yaml")
    cfg = yaml.safe_load(source.read_text())
    # the packed weights are one unsharded file: one process, no backend settings (a ZeRO stage,
    # offload, FSDP units) that a single-device run would reject
    cfg["distributed"] = {"backend": "single", "workers": 0}
    cfg.get("model", {}).pop("init_from", None)  # the weights are these, not an init's
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))


def pack(checkpoint: Path, into: str | Path, run_dir: Path | None = None) -> dict[str, Any]:
    """Pack `checkpoint` (verified first) into `into/<sha256>/` (a directory, or an object-store
    URI: packed locally, then uploaded, manifest last); returns the registration's fields:
    artifact_uri, sha256 (of its manifest), size, step, metrics, source_uri."""
    from tengine.remote import exists, is_remote, upload_dir

    if not is_remote(into):
        return _pack(checkpoint, Path(into), run_dir)
    with tempfile.TemporaryDirectory(prefix="tengine-pack-") as local:
        info = _pack(checkpoint, Path(local), run_dir)
        remote = f"{str(into).rstrip('/')}/{info['sha256']}"
        if not exists(remote):  # content-addressed: packed and uploaded before, the same bytes
            upload_dir(Path(info["artifact_uri"]), remote)
    return {**info, "artifact_uri": remote}


def _pack(checkpoint: Path, into: Path, run_dir: Path | None) -> dict[str, Any]:
    checkpoint = Path(checkpoint).resolve()
    if (problem := verify(checkpoint)) is not None:
        raise ArtifactMismatch(f"cannot register {checkpoint}: {problem}")
    run_dir = Path(run_dir) if run_dir else checkpoint.parent.parent
    source = read_manifest(checkpoint)

    def write(tmp: Path) -> None:
        _weights(checkpoint, tmp / WEIGHTS)
        _config(run_dir, checkpoint, tmp / "config.yaml")

    return _seal(write, into, run_dir, source["step"], source.get("metrics", {}),
                 str(checkpoint), source.get("created"))


def pack_model(model, cfg, into: str | Path, step: int = 0, metrics: dict | None = None,
               run_dir: Path | None = None) -> dict[str, Any]:
    """An artifact from a model in memory and its resolved config (`TengineConfig`): what
    `create_export_bundle` exports; `run_dir`: where its tokenizer files are, if any."""
    import yaml

    module = getattr(model, "module", model)  # DDP / DeepSpeed engine: the model inside

    def write(tmp: Path) -> None:
        _save_state(module.state_dict(), tmp / WEIGHTS)
        raw = cfg.model_dump(mode="json")
        raw["distributed"] = {"backend": "single", "workers": 0}
        raw["model"].pop("init_from", None)
        (tmp / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    return _seal(write, Path(into), run_dir, step, metrics or {}, "in-memory model", None)


def _seal(write, into: Path, run_dir: Path | None, step: int, metrics: dict, source: str,
          created: Any) -> dict[str, Any]:
    """`write(tmp)` the weights and config into a temporary directory, add the run's tokenizer
    files and the manifest, and rename it to `into/<sha256 of its manifest>`."""
    from tengine.data.tokenizers import SAVED_FILES

    tmp = into / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        for name in (*SAVED_FILES, *PROFILE_FILES):
            if run_dir is not None and (run_dir / name).is_file():
                shutil.copyfile(run_dir / name, tmp / name)
        files = {p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
                 for p in sorted(tmp.iterdir())}
        manifest = {"kind": KIND, "step": step, "metrics": metrics, "source": source,
                    "created": created, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        digest = sha256_file(tmp / MANIFEST)
        final = into / digest
        if final.exists():  # this checkpoint was packed before: the same bytes
            shutil.rmtree(tmp)
            digest = sha256_file(final / MANIFEST)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in final.iterdir())
    return {"artifact_uri": str(final), "sha256": digest, "size": size, "step": step,
            "metrics": metrics, "source_uri": source}
