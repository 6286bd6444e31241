"""Build an export bundle: every requested format, proven on real batches, or no bundle at all.

    with resolve("runs/quickstart") as src:
        result = build_bundle(src, Path("bundles/qs"), formats=["safetensors", "pt2", "onnx"])

1. Rebuild the artifact's model (fp32, CPU) and take 8 real validation examples (model.py).
2. Pre-export health: finite parameters and buffers, a finite forward pass, the size.
3. In a temporary directory beside `out`: config, tokenizer, inference.py, the parity inputs,
   then each format's files (formats.py; a builder that raises is a failed format, not a crash).
4. Parity (parity.py): every runnable format in a fresh `python -I` process that cannot import
   tengine, on b{1,3,8} × s{short,odd,max}; a weights-only safetensors by its tensors' hashes
   read in that process and by the outputs of a model rebuilt from the file. Latency p50/p95
   at batch 1 and 8 for PyTorch eager and each runnable format.
5. Any failure: `ExportFailed` (exit 1) with the table of what failed and why; the temporary
   directory is removed, nothing is left. Otherwise metadata.json (every file's sha256 and
   size, versions, I/O specs, tolerances, figures), health_report.json/.md, README.md and
   requirements.txt are written and the directory is renamed into place in one step.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tengine.errors import ConfigError, TengineError
from tengine.export import documents, parity
from tengine.export.formats import (
    DEFAULT_FORMATS,
    FORMATS,
    Positional,
    Target,
    check_requirements,
    reason,
)
from tengine.export.model import Exported, build, load
from tengine.export.runtime import RUNTIMES, time_calls
from tengine.export.source import Source
from tengine.files import sha256_file

BUNDLE_VERSION = 1
INPUTS_FILE = "parity_inputs.npz"
METADATA = "metadata.json"
METADATA_SHA256 = "metadata.sha256"  # metadata.json's own hash: it lists every other file's
RUNTIME_FILE = Path(__file__).with_name("runtime.py")
Cases = dict[str, dict[str, np.ndarray]]


class ExportFailed(TengineError):
    """A format that could not be built or did not match PyTorch: no bundle was written."""

    def __init__(self, lines: list[str] | str, results: dict | None = None):
        self.results = results or {}
        super().__init__("\n".join([lines] if isinstance(lines, str) else lines))


def versions() -> dict[str, str | None]:
    from tengine.engine.envinfo import package_version

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            **{n: package_version(n) for n in ("tengine", "numpy", "safetensors", "onnx",
                                               "onnxruntime", "onnxscript", "transformers",
                                               "tokenizers")}}


def health_checks(exp: Exported) -> dict[str, dict[str, Any]]:
    """Before any export: finite parameters and buffers, a finite forward pass, the size."""
    state = exp.model.state_dict()
    bad = [n for n, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    with torch.inference_mode():
        out = Positional(exp.model, exp.names)(*exp.batch.values())
    finite = bool(torch.isfinite(out).all())
    return {
        "finite_parameters": {"ok": not bad, "tensors": len(state),
                              **({"why": f"non-finite values in {', '.join(bad[:3])}"} if bad else {})},
        "forward": {"ok": finite, "batch": list(next(iter(exp.batch.values())).shape),
                    "output_shape": list(out.shape), **({} if finite else {"why": "non-finite outputs"})},
        "size": {"ok": True, "parameters": sum(p.numel() for p in exp.model.parameters()),
                 "bytes": sum(t.numel() * t.element_size() for t in state.values())},
    }


def example_case(exp: Exported, cases: Cases) -> str:
    """The case formats are traced with: batch 3 at the odd length (sizes ≥ 2 and neither the
    maximum, so torch.export's 0/1 specialisation cannot pin a dimension)."""
    if not exp.sequences:
        return "b3"
    seqs = parity.seq_lengths(exp.batch[exp.names[0]].shape[1])
    return f"b3_s{seqs[len(seqs) // 2]}"


def build_bundle(src: Source, out: Path, formats: list[str] | None = None,
                 atol: float | None = None, opset: int | None = None,
                 latency_iters: int | None = None, force: bool = False,
                 progress=print) -> dict[str, Any]:
    """Export `src` to the bundle directory `out`; returns metadata.json's content (plus
    `bundle`, its path). Raises ExportFailed (nothing written) when any format fails. What is
    not given comes from the run's config (its `export` section)."""
    for f in formats or ():
        FORMATS.get(f)  # an unknown name fails before any work, with the known ones
    out = Path(out).resolve()  # the isolated runs work in the bundle's own directory
    if out.exists() and not (force and out.is_dir()):
        raise ConfigError(f"export: '{out}' already exists; give another --out"
                          + (", or --force to replace it" if out.is_dir() else " (it is a file)"))
    started = time.perf_counter()
    exp = load(src.artifact)
    conf = exp.cfg.export
    formats = list(dict.fromkeys(["safetensors", *(formats or conf.formats or DEFAULT_FORMATS)]))
    for f in formats:
        FORMATS.get(f)  # the config's names too
    check_requirements(formats)
    atol = conf.parity_atol if atol is None else atol
    opset = conf.onnx_opset if opset is None else opset
    latency_iters = conf.latency_iters if latency_iters is None else latency_iters
    progress(f"export: {src.name} step {src.step} ({exp.cfg.task.type}): "
             f"{', '.join(formats)}")
    health = health_checks(exp)
    if not all(c["ok"] for c in health.values()):
        raise ExportFailed(["export: the model failed its pre-export checks; no bundle written",
                            *(f"{k}: {c['why']}" for k, c in health.items() if not c["ok"])])
    cases = parity.make_cases(exp.batch, text=exp.sequences)
    example = tuple(torch.from_numpy(cases[example_case(exp, cases)][n]) for n in exp.names)
    target = Target(exp.model, exp.names, example, exp.dims, exp.seq_max,
                    _weights(src.artifact), sha256_file(src.artifact / "config.yaml"), opset,
                    exp.hf_auto_class)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _prepare(tmp, src, exp, cases)
        built, results = _build_formats(target, tmp, formats, progress)
        ref = parity.reference(target.module, exp.names, cases)
        meta = _metadata(src, exp, built, ref, atol, opset, health)
        _write_json(tmp / METADATA, meta)  # what inference.py reads in the parity runs
        results.update(_check(tmp, exp, target, built, cases, ref, atol, latency_iters, progress))
        results = {f: results[f] for f in formats}
        failed = {f: r for f, r in results.items() if not r["ok"]}
        if failed:
            raise ExportFailed(
                [f"export failed: {len(failed)} of {len(formats)} formats did not pass; no "
                 "bundle written", *(f"{f}: {r['why']}" for f, r in failed.items()), "",
                 *parity.table(results, failures_only=True).splitlines()], results)
        eager = _eager_latency(target, cases, latency_iters)
        meta = _figures(meta, results, eager, health, latency_iters,
                        round(time.perf_counter() - started, 1))
        documents.write(tmp, meta, parity.table(results))
        meta["files"] = {p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
                         for p in sorted(tmp.iterdir()) if p.name != METADATA}
        _write_json(tmp / METADATA, meta)
        (tmp / METADATA_SHA256).write_text(f"{sha256_file(tmp / METADATA)}  {METADATA}\n")
        _readable(tmp)
        _put_in_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(parity.table(results))
    progress(documents.latency_table(meta["latency"]))
    from tengine.tracking.bundles import record_bundle

    if recorded := record_bundle(src.origin.get("run_dir"), out, meta, src.step):
        progress(f"export: the bundle is recorded with its run ({', '.join(recorded)})")
    return {**meta, "bundle": str(out.resolve())}


def _put_in_place(tmp: Path, out: Path) -> None:
    """Rename the finished bundle to `out`; an old bundle there (--force) is renamed aside
    first and removed only once the new one is in place."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _weights(artifact: Path) -> dict[str, torch.Tensor]:
    """The artifact's consolidated weights, as packed (tied tensors once)."""
    from safetensors.torch import load_file

    from tengine.engine.artifact import WEIGHTS

    return load_file(str(artifact / WEIGHTS))


def _prepare(tmp: Path, src: Source, exp: Exported, cases: Cases) -> None:
    from tengine.data.tokenizers import SAVED_FILES

    for name in ("config.yaml", *SAVED_FILES):
        if (src.artifact / name).is_file():
            shutil.copyfile(src.artifact / name, tmp / name)
    if exp.tokenizer and exp.tokenizer.get("file") and not (tmp / exp.tokenizer["file"]).is_file():
        exp.tokenizer_object.save(tmp)  # the one the data was built with, e.g. from memory
    shutil.copyfile(RUNTIME_FILE, tmp / "inference.py")
    parity.save_cases(cases, tmp / INPUTS_FILE)
    _profile(tmp, src, exp)


def _profile(tmp: Path, src: Source, exp: Exported) -> None:
    """profile.json: the run's data profile (else this data's), with the model's outputs on the
    reference batch, so `tengine drift --reference BUNDLE` compares data and outputs."""
    from tengine.data.collators import build_collator
    from tengine.monitoring import profiles

    cfg = exp.cfg
    if (src.artifact / profiles.PROFILE_FILE).is_file():
        profile = profiles.load_profile(src.artifact)
        batch = profiles.load_batch(src.artifact)
    else:
        profile = profiles.data_profile(exp.data.train, pad_id=exp.model_args.get("pad_id", 0),
                                        vocab_size=exp.model_args.get("vocab_size"),
                                        num_classes=exp.model_args.get("num_classes"),
                                        max_examples=cfg.monitoring.profile_examples)
        collate = build_collator(cfg.data.collator, cfg.task.type, exp.data.pad_id)
        batch = profiles.reference_batch(exp.data.val, collate, cfg.monitoring.reference_examples)
    if batch and cfg.task.type in profiles.OUTPUT_TASKS:
        profile["outputs"] = profiles.output_profile(exp.model, batch,
                                                     language_model=exp.language_model)
    profiles.save_profile(tmp, profile, batch)


def _build_formats(target: Target, tmp: Path, formats: list[str],
                   progress) -> tuple[dict[str, dict], dict[str, dict]]:
    built: dict[str, dict] = {}
    failed: dict[str, dict] = {}
    for fmt in formats:
        started = time.perf_counter()
        try:
            built[fmt] = {**FORMATS.get(fmt)(target, tmp),
                          "build_s": round(time.perf_counter() - started, 2)}
            progress(f"export: built {fmt} in {built[fmt]['build_s']} s")
        except Exception as err:  # the exporter cannot handle the model: a failed row
            failed[fmt] = {"ok": False, "stage": "build", "why": reason(err)}
            progress(f"export: {fmt} FAILED to build: {failed[fmt]['why']}")
    return built, failed


def _check(tmp: Path, exp: Exported, target: Target, built: dict[str, dict], cases: Cases,
           ref: dict[str, np.ndarray], atol: float, latency_iters: int,
           progress) -> dict[str, dict]:
    results = {}
    for fmt, meta in built.items():
        r = check_one(tmp, fmt, meta, cases, ref, exp.names, atol, exp.language_model,
                      latency_iters, model_of=lambda f: build(exp.cfg, exp.model_args, tmp / f),
                      state_of=lambda f: target.state)
        results[fmt] = {**r, "stage": "parity"}
        progress(f"export: {fmt} parity {'ok' if r['ok'] else 'FAILED: ' + r['why']}")
    return results


def check_one(bundle: Path, fmt: str, meta: dict[str, Any], cases: Cases,
              ref: dict[str, np.ndarray], names: list[str], atol: float, language_model: bool,
              latency_iters: int, model_of, state_of) -> dict[str, Any]:
    """One format of `bundle` against `ref`: a runnable one in the isolated process, a
    weights-only safetensors by `check_weights_only` (`model_of(file)`: the model tengine
    rebuilds from it; `state_of(file)`: the tensors it must hold). What `tengine export` and
    `export verify` both run; a failure always carries its `why`."""
    try:
        if meta.get("runtime") in RUNTIMES:
            r = parity.check_format(bundle, fmt, bundle / INPUTS_FILE, ref, atol, language_model,
                                    latency_iters)
        elif not meta.get("weights_only"):
            r = {"ok": False, "why": f"runtime {meta.get('runtime')!r} is not one inference.py "
                 f"runs ({', '.join(RUNTIMES)}): add it to tengine/export/runtime.py RUNTIMES"}
        else:
            r = check_weights_only(bundle, meta["file"], model_of(meta["file"]), names,
                                   state_of(meta["file"]), cases, ref, atol, language_model)
    except parity.IsolatedRunFailed as err:
        r = {"ok": False, "why": str(err)}
    if not r["ok"] and "why" not in r:
        bad = [c for c, s in r["cases"].items() if not s["ok"]]
        r["why"] = f"parity failed on {len(bad)} of {len(r['cases'])} cases " \
                   f"(worst max abs {parity.worst(r['cases'])['max_abs']:.3g} > {atol:g})"
    return r


def check_weights_only(bundle: Path, file: str, model: torch.nn.Module, names: list[str],
                       state: dict[str, torch.Tensor], cases: Cases, ref: dict[str, np.ndarray],
                       atol: float, language_model: bool) -> dict[str, Any]:
    """A tengine model's safetensors: every tensor bit-equal to `state` when read without
    tengine, and the outputs of `model` (rebuilt from the file by tengine: its code is
    tengine's) within `atol` of `ref` on every case."""
    weights = parity.check_weights(bundle, file, state)
    out = parity.reference(Positional(model, names), names, cases)
    checked = {c: parity.compare(ref[c], out[c], atol, language_model) for c in ref}
    return {"ok": weights["ok"] and all(c["ok"] for c in checked.values()), "cases": checked,
            "weights": weights, **({} if weights["ok"] else {"why": weights["why"]})}


def _eager_latency(target: Target, cases: Cases, iters: int) -> dict[str, dict]:
    out = {}
    with torch.inference_mode():
        for case, x in cases.items():
            if case.startswith("latency_") and iters:
                args = tuple(torch.from_numpy(x[n]) for n in target.names)
                out[case.removeprefix("latency_")] = time_calls(lambda a=args: target.module(*a),
                                                                iters)
    return out


def _io_specs(exp: Exported, out_shape: list[int]) -> tuple[list[dict], list[dict]]:
    def named(shape: list[int], dims: dict[int, str]) -> list[int | str]:
        return [dims.get(i, s) for i, s in enumerate(shape)]

    inputs = [{"name": n, "dtype": str(exp.batch[n].numpy().dtype),
               "shape": named(list(exp.batch[n].shape), d), "dynamic": sorted(set(d.values()))}
              for n, d in zip(exp.names, exp.dims, strict=True)]
    out_dims = {0: "batch", **({1: "seq"} if exp.language_model else {})}
    return inputs, [{"name": "logits", "dtype": "float32", "shape": named(out_shape, out_dims),
                     "dynamic": sorted(set(out_dims.values()))}]


def _metadata(src: Source, exp: Exported, built: dict[str, dict], ref: dict[str, np.ndarray],
              atol: float, opset: int, health: dict) -> dict[str, Any]:
    inputs, outputs = _io_specs(exp, list(next(iter(ref.values())).shape))
    return {
        "tengine_bundle": BUNDLE_VERSION, "name": src.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": exp.cfg.task.type, "inputs": inputs, "outputs": outputs,
        "seq_max": exp.seq_max, "formats": built, "tokenizer": exp.tokenizer, "labels": exp.labels,
        "source": {**src.origin, "step": src.step, "metrics": src.metrics,
                   "artifact_sha256": sha256_file(src.artifact / "manifest.json")},
        "model": {"name": exp.cfg.model.name, "args": exp.model_args,
                  "config_sha256": sha256_file(src.artifact / "config.yaml"),
                  "hf_auto_class": exp.hf_auto_class, **{k: health["size"][k] for k in
                                                          ("parameters", "bytes")}},
        "tolerances": {"max_abs": atol}, "opset": opset if "onnx" in built else None,
        "parity_inputs": INPUTS_FILE, "reference": parity.fingerprint(ref),
        "versions": versions(),
    }


def _figures(meta: dict, results: dict[str, dict], eager: dict, health: dict, iters: int,
             seconds: float) -> dict[str, Any]:
    """metadata.json with what the checks measured."""
    meta = dict(meta)
    meta["parity"] = {f: {"cases": r["cases"], "worst": parity.worst(r["cases"]),
                          **({"weights": r["weights"]} if "weights" in r else {})}
                      for f, r in results.items()}
    meta["latency"] = {"iters": iters, "eager": eager,
                       **{f: r["latency"] for f, r in results.items() if r.get("latency")}}
    meta["health"] = {"pre_export": health,
                      "formats": {f: {"ok": r["ok"], "worst": parity.worst(r["cases"])}
                                  for f, r in results.items()}}
    meta["export_s"] = seconds
    return meta


def _readable(directory: Path) -> None:
    """Files as the umask allows for any new file (safetensors writes its own 0600): a bundle
    is for other people and services to read."""
    mask = os.umask(0)
    os.umask(mask)
    directory.chmod(0o777 & ~mask)
    for p in directory.iterdir():
        p.chmod(0o666 & ~mask)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1) + "\n")
