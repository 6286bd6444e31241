"""Parity: every exported format against the PyTorch model, on real validation batches.

    cases = make_cases(model_inputs_of_8_val_examples, text=True)   # b{1,3,8} × s{short,odd,max}
    report = run_isolated(bundle_dir, "onnx", inputs_npz, out_npz, latency_iters=30)
    stats = compare(reference, outputs, atol=1e-4, language_model=True)

Each format runs in a fresh `python -I` process that executes the bundle's own inference.py
with `tengine` made unimportable (`sys.modules["tengine"] = None`: any `import tengine…` raises
ImportError), so a pass proves the bundle serves without tengine. Figures per case: max
absolute error, max relative error (max |Δ| / max |reference|: a per-element ratio explodes on
logits near zero), p99 absolute error, top-1 agreement (argmax over the last axis), and for
language models the mean KL(reference ‖ exported) of the next-token distributions. A case passes
when the shapes agree, everything is finite and the max absolute error is within `atol`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tengine.errors import TengineError
from tengine.export.runtime import cases_of, digest  # imports no tengine

BATCHES = (1, 3, 8)
LATENCY_BATCHES = (1, 8)
# runs inference.py as __main__ in a process where tengine cannot be imported
BOOT = ("import os, runpy, sys; sys.modules['tengine'] = None; script = sys.argv[1]; "
        "sys.argv = sys.argv[1:]; sys.path.insert(0, os.path.dirname(script)); "
        "runpy.run_path(script, run_name='__main__')")


def seq_lengths(longest: int) -> list[int]:
    """A short length, an odd one, the maximum (distinct, each ≥ 1)."""
    short = max(1, min(8, longest // 4))
    odd = (longest // 2) | 1
    return sorted({short, odd if odd < longest else max(1, longest - 2) | 1, longest})


def make_cases(full: dict[str, torch.Tensor], text: bool) -> dict[str, dict[str, np.ndarray]]:
    """Slices of one real batch (≥ 8 examples): `b{B}_s{L}` for text models (every input with a
    sequence axis cut to L), `b{B}` for images; plus `latency_b1` / `latency_b8` at full length."""
    n = next(iter(full.values())).shape[0]
    if n < max(BATCHES):
        full = {k: v.repeat(-(-max(BATCHES) // n), *[1] * (v.dim() - 1)) for k, v in full.items()}
    seqs = seq_lengths(next(iter(full.values())).shape[1]) if text else [None]

    def cut(b: int, length: int | None) -> dict[str, np.ndarray]:
        return {k: (v[:b, :length] if text and v.dim() >= 2 else v[:b]).contiguous().numpy()
                for k, v in full.items()}

    cases = {f"b{b}" + (f"_s{s}" if text else ""): cut(b, s) for b in BATCHES for s in seqs}
    cases.update({f"latency_b{b}": cut(b, None) for b in LATENCY_BATCHES})
    return cases


def save_cases(cases: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    np.savez(path, **{f"{case}__{name}": a for case, x in cases.items() for name, a in x.items()})


def load_cases(path: Path) -> dict[str, dict[str, np.ndarray]]:
    return cases_of(np.load(path))  # the reader inference.py uses


def reference(module: torch.nn.Module, names: list[str],
              cases: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        return {case: module(*(torch.from_numpy(x[n]) for n in names)).float().numpy()
                for case, x in cases.items() if not case.startswith("latency_")}


def fingerprint(outputs: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per case: the sha256 of the reference outputs' bytes, their mean and max |value|: what
    `export verify` checks the model it rebuilds against (bit-equal on the same stack, close
    anywhere else)."""
    return {case: {"sha256": digest(a)["sha256"], "mean_abs": float(np.abs(a).mean()),
                   "max_abs": float(np.abs(a).max())} for case, a in outputs.items()}


def same_outputs(recorded: dict[str, Any], now: dict[str, Any], rel: float = 1e-5) -> bool:
    return recorded["sha256"] == now["sha256"] or all(
        abs(recorded[k] - now[k]) <= rel * max(abs(recorded[k]), 1e-12) for k in ("mean_abs", "max_abs"))


def compare(ref: np.ndarray, out: np.ndarray, atol: float, language_model: bool) -> dict[str, Any]:
    if ref.shape != out.shape:
        return {"ok": False, "why": f"output shape {list(out.shape)}, PyTorch {list(ref.shape)}"}
    out64, ref64 = out.astype(np.float64), ref.astype(np.float64)
    diff = np.abs(out64 - ref64)
    finite = bool(np.isfinite(out64).all())
    stats: dict[str, Any] = {
        "max_abs": float(diff.max()) if finite else float("inf"),
        "max_rel": float(diff.max() / max(np.abs(ref64).max(), 1e-12)) if finite else float("inf"),
        "p99_abs": float(np.percentile(diff, 99)) if finite else float("inf"),
        "top1": float((out.argmax(-1) == ref.argmax(-1)).mean()),
    }
    if language_model:
        def log_softmax(x: np.ndarray) -> np.ndarray:
            x = x - x.max(-1, keepdims=True)
            return x - np.log(np.exp(x).sum(-1, keepdims=True))

        lp, lq = log_softmax(ref64), log_softmax(out64)
        stats["kl"] = float((np.exp(lp) * (lp - lq)).sum(-1).mean()) if finite else float("inf")
    stats["ok"] = finite and stats["max_abs"] <= atol
    if not stats["ok"]:
        stats["why"] = "non-finite outputs" if not finite else \
            f"max abs error {stats['max_abs']:.3g} > {atol:g}"
    return stats


class IsolatedRunFailed(TengineError):
    pass


def run_isolated(bundle: Path, args: list[str], timeout_s: float = 900) -> dict[str, Any]:
    """Run the bundle's inference.py with `args` in a fresh `python -I` process that cannot
    import tengine; returns the JSON it printed last."""
    bundle = Path(bundle).resolve()
    what = f"inference.py {' '.join(args[:2])}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    try:
        proc = subprocess.run([sys.executable, "-I", "-c", BOOT, str(bundle / "inference.py"),
                               *args], cwd=bundle, env=env, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise IsolatedRunFailed(f"{what} took more than {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        raise IsolatedRunFailed(f"{what} exited {proc.returncode}: {tail[0][:300]}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise IsolatedRunFailed(f"{what} printed no JSON result (stdout: "
                                f"{proc.stdout.strip()[-200:]!r})") from None


def check_format(bundle: Path, fmt: str, inputs: Path, ref: dict[str, np.ndarray], atol: float,
                 language_model: bool, latency_iters: int) -> dict[str, Any]:
    """One runnable format: its outputs on every case (compared with `ref`) and its latency."""
    bundle, inputs = Path(bundle).resolve(), Path(inputs).resolve()
    with tempfile.TemporaryDirectory(prefix="tengine-parity-") as tmp:  # not beside the bundle:
        out_file = Path(tmp) / f"{fmt}-outputs.npz"                    # it may be read-only
        report = run_isolated(bundle, ["--format", fmt, "--parity", str(inputs), str(out_file),
                                       "--latency-iters", str(latency_iters)])
        with np.load(out_file) as outputs:
            missing = sorted(set(ref) - set(outputs.files))
            if missing:
                raise IsolatedRunFailed(f"inference.py --format {fmt} returned no output for "
                                        f"{', '.join(missing)}")
            cases = {c: compare(ref[c], outputs[c], atol, language_model) for c in ref}
    return {"ok": all(c["ok"] for c in cases.values()), "cases": cases,
            "latency": report["latency"], "load_s": report["load_s"]}


def check_weights(bundle: Path, file: str, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A weights-only safetensors file, read in the isolated process: every tensor bit-equal to
    the model's (shape, dtype, sha256 of its bytes)."""
    seen = run_isolated(bundle, ["--weights", file])
    bad = [name for name, t in state.items() if seen.get(name) != digest(t.detach().cpu().numpy())]
    extra = sorted(set(seen) - set(state))
    ok = not bad and not extra
    why = None if ok else f"{len(bad)} tensors differ ({', '.join(bad[:3])})" if bad else \
        f"unexpected tensors {', '.join(extra[:3])}"
    return {"ok": ok, "tensors": len(seen), **({"why": why} if why else {})}


def worst(cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The format's figures over all its cases (the worst of each)."""
    vals = list(cases.values())
    out = {"max_abs": max(c.get("max_abs", float("inf")) for c in vals),
           "max_rel": max(c.get("max_rel", float("inf")) for c in vals),
           "p99_abs": max(c.get("p99_abs", float("inf")) for c in vals),
           "top1": min(c.get("top1", 0.0) for c in vals)}
    if any("kl" in c for c in vals):
        out["kl"] = max(c.get("kl", float("inf")) for c in vals)
    return out


def table(results: dict[str, dict[str, Any]], failures_only: bool = False) -> str:
    """The parity table: one row per format and case (`failures_only`: the failed cases, and
    one row for each format that passed them all)."""
    rows = [("format", "case", "max_abs", "max_rel", "p99_abs", "top1", "kl", "result")]
    for fmt, r in results.items():
        if not r.get("cases"):  # it failed before any case ran (build, load)
            rows.append((fmt, "-", "-", "-", "-", "-", "-", f"FAIL: {r.get('why', '')}"))
            continue
        if failures_only and r["ok"]:
            w = worst(r["cases"])
            rows.append((fmt, f"all {len(r['cases'])}", f"{w['max_abs']:.2e}", f"{w['max_rel']:.2e}",
                         f"{w['p99_abs']:.2e}", f"{w['top1']:.3f}",
                         f"{w['kl']:.1e}" if "kl" in w else "-", "ok"))
            continue
        for case, c in r.get("cases", {}).items():
            if failures_only and c["ok"]:
                continue
            rows.append((fmt, case, *(f"{c[k]:.2e}" if k in c else "-" for k in
                                      ("max_abs", "max_rel", "p99_abs")),
                         f"{c['top1']:.3f}" if "top1" in c else "-",
                         f"{c['kl']:.1e}" if "kl" in c else "-",
                         "ok" if c["ok"] else f"FAIL: {c.get('why', '')}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)) + "  " + r[-1]
                     for r in rows)
