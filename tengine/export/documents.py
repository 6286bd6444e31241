"""The bundle's human-facing files: README.md, requirements.txt, health_report.json/.md.

Everything here is derived from metadata.json's content, so a bundle's documents always state
the figures its metadata records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LEGACY_NOTE = ("TorchScript is legacy (PyTorch deprecated it in favour of torch.export); it is "
               "here for consumers of older bundles.")


def requirements(meta: dict[str, Any]) -> list[str]:
    """What inference.py needs for the formats this bundle holds (pinned to the versions the
    parity check ran with)."""
    v = meta["versions"]
    runtimes = {m.get("runtime") for m in meta["formats"].values()}
    need = ["numpy", "safetensors"]
    if "onnx" in runtimes:
        need.append("onnxruntime")
    if runtimes & {"pt2", "torchscript", "hf"}:
        need.append("torch")
    if "hf" in runtimes:
        need.append("transformers")
    if (meta.get("tokenizer") or {}).get("kind") == "tokenizers":
        need.append("tokenizers")
    return [f"{n}=={v[n].split('+')[0]}" if v.get(n) else n for n in need]


def latency_table(latency: dict[str, Any]) -> str:
    rows = [("format", "batch", "p50 ms", "p95 ms")]
    for fmt, per in latency.items():
        if fmt == "iters":
            continue
        for batch, t in per.items():
            rows.append((fmt, batch.removeprefix("b"), f"{t['p50_ms']:.3f}", f"{t['p95_ms']:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def default_format(formats: dict[str, Any]) -> str | None:
    """The format inference.py runs when none is named (its PREFERRED order)."""
    from tengine.export.runtime import PREFERRED

    runnable = [f for f, m in formats.items() if m.get("runtime") in PREFERRED]
    return min(runnable, key=lambda f: PREFERRED.index(formats[f]["runtime"]), default=None)


def _example_command(meta: dict[str, Any]) -> str:
    if meta["task"] in ("vision_classification", "segmentation"):
        shape = [s for s in meta["inputs"][0]["shape"] if s != "batch"]
        return (f"python inference.py --image image.npy   # a float32 array of shape "
                f"{shape} (or a batch of them)")
    if meta.get("tokenizer"):
        return 'python inference.py --text "def main"'
    return "python inference.py --ids 3,1,4,1,5 --top-k 5"


def readme(meta: dict[str, Any], parity_table: str) -> str:
    src = meta["source"]
    formats = meta["formats"]
    lines = [
        f"# {meta['name']}: a tengine export bundle", "",
        f"A `{meta['model']['name']}` model for `{meta['task']}` "
        f"({meta['model']['parameters']:,} parameters), exported from {src.get('kind')} "
        f"{src.get('path') or src.get('name', '')} at step {src['step']}.", "",
        "## Run it (no tengine needed)", "",
        "```", "pip install -r requirements.txt", _example_command(meta),
        "python inference.py --help", "```", "",
        "From Python, beside these files:", "",
        "```python", "import numpy as np, inference",
        f"run = inference.load({default_format(formats)!r})",
        "logits = run({" + ", ".join(f"{i['name']!r}: ..." for i in meta["inputs"]) + "})", "```",
        "", "## Files", "",
        "| format | file | runtime | notes |", "|---|---|---|---|",
    ]
    for fmt, m in formats.items():
        note = LEGACY_NOTE if m.get("legacy") else m.get("exporter") or m.get("layout") or ""
        lines.append(f"| {fmt} | `{m['file']}` | {m.get('runtime') or 'weights only'} | {note} |")
    lines += ["", "Inputs: " + "; ".join(f"`{i['name']}` {i['dtype']} {i['shape']}"
                                         for i in meta["inputs"]),
              "Outputs: " + "; ".join(f"`{o['name']}` {o['dtype']} {o['shape']}"
                                      for o in meta["outputs"]), "",
              "## Parity", "",
              f"Every format against PyTorch (fp32) on real validation batches; a case passes at "
              f"max abs error ≤ {meta['tolerances']['max_abs']:g}. Runnable formats were run in a "
              "fresh `python -I` process that could not import tengine.", "",
              "```", parity_table, "```", "",
              f"## Latency (CPU, {meta['latency']['iters']} calls after warm-up)", "",
              "```", latency_table(meta["latency"]), "```", "",
              "`tengine export verify .` recomputes every file's sha256 and the parity figures.",
              ""]
    return "\n".join(lines)


def health_markdown(report: dict[str, Any]) -> str:
    lines = ["# Health report", "", "## Before export", "", "| check | result | details |",
             "|---|---|---|"]
    for name, c in report["pre_export"].items():
        details = ", ".join(f"{k}={v}" for k, v in c.items() if k not in ("ok", "why"))
        lines.append(f"| {name} | {'ok' if c['ok'] else 'FAIL: ' + c.get('why', '')} | {details} |")
    lines += ["", "## Formats", "", "| format | result | max abs | p99 abs | top-1 |",
              "|---|---|---|---|---|"]
    for fmt, r in report["formats"].items():
        w = r["worst"]
        lines.append(f"| {fmt} | {'ok' if r['ok'] else 'FAIL'} | {w['max_abs']:.2e} | "
                     f"{w['p99_abs']:.2e} | {w['top1']:.3f} |")
    return "\n".join(lines) + "\n"


def write(directory: Path, meta: dict[str, Any], parity_table: str) -> None:
    (directory / "README.md").write_text(readme(meta, parity_table))
    (directory / "requirements.txt").write_text("\n".join(requirements(meta)) + "\n")
    (directory / "health_report.json").write_text(json.dumps(meta["health"], indent=1) + "\n")
    (directory / "health_report.md").write_text(health_markdown(meta["health"]))
