"""Run an exported tengine model without tengine: this file is copied into every bundle as
`inference.py` and imports only numpy and the format's runtime (onnxruntime, torch, or
transformers for a Hugging Face model's safetensors).

    python inference.py --text "def main"              # a language model with a saved tokenizer
    python inference.py --ids 3,1,4,1,5 --top-k 5      # token ids (any language model)
    python inference.py --image img.npy                # a vision model: a [C,H,W] or [B,C,H,W] float32 array
    python inference.py --ids 3,1,4 --format pt2 --json

    import inference                                   # from Python, beside the bundle's files
    run = inference.load("onnx")                       # {input name: numpy array} -> logits
    logits = run({"input_ids": np.array([[3, 1, 4]])})

The formats this bundle holds, its inputs (names, dtypes, dynamic dimensions) and the parity
and latency figures measured when it was built are in metadata.json. `--parity` and `--weights`
are what `tengine export` and `tengine export verify` run in a fresh `python -I` process: they
prove the files load and run with nothing of tengine importable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
Runner = Callable[[dict], np.ndarray]


def metadata(bundle: Path = HERE) -> dict:
    return json.loads((Path(bundle) / "metadata.json").read_text())


def _names(bundle: Path) -> list[str]:
    return [i["name"] for i in metadata(bundle)["inputs"]]


def _onnx(bundle: Path, meta: dict) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(bundle / meta["file"]), options,
                                   providers=["CPUExecutionProvider"])
    return lambda inputs: session.run(None, inputs)[0]


def _torch_runner(module, names: list[str]) -> Runner:
    import torch

    def run(inputs: dict) -> np.ndarray:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names))
        return out.numpy()

    return run


def _pt2(bundle: Path, meta: dict) -> Runner:
    import torch

    return _torch_runner(torch.export.load(str(bundle / meta["file"])).module(), _names(bundle))


def _torchscript(bundle: Path, meta: dict) -> Runner:
    import torch

    return _torch_runner(torch.jit.load(str(bundle / meta["file"])).eval(), _names(bundle))


def _hf(bundle: Path, meta: dict) -> Runner:
    """A Hugging Face model's safetensors in the save_pretrained layout: transformers reads it."""
    import torch
    import transformers

    model = getattr(transformers, meta["auto_class"]).from_pretrained(str(bundle)).eval()
    names = _names(bundle)

    def run(inputs: dict) -> np.ndarray:
        with torch.inference_mode():
            out = model(**{n: torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names})
        return out.logits.float().numpy()

    return run


RUNTIMES: dict[str, Callable[[Path, dict], Runner]] = {
    "onnx": _onnx, "pt2": _pt2, "torchscript": _torchscript, "hf": _hf}


PREFERRED = ("onnx", "pt2", "hf", "torchscript")  # the default: the lightest runtime first


def load(fmt: str | None = None, bundle: Path = HERE) -> Runner:
    """The model of format `fmt` (default: onnx, else pt2, else what the bundle has)."""
    bundle = Path(bundle)
    formats = metadata(bundle)["formats"]
    runnable = sorted((f for f, m in formats.items() if m.get("runtime") in RUNTIMES),
                      key=lambda f: PREFERRED.index(formats[f]["runtime"]))
    fmt = fmt or (runnable[0] if runnable else None)
    if fmt not in runnable:
        raise SystemExit(f"format {fmt!r} is not runnable from this bundle; it has "
                         f"{', '.join(runnable) or 'no runnable format (weights only)'}")
    meta = formats[fmt]
    try:
        return RUNTIMES[meta["runtime"]](bundle, meta)
    except ImportError as err:
        raise SystemExit(f"format {fmt!r} needs {err.name}: pip install -r requirements.txt "
                         f"(or choose another with --format: {', '.join(runnable)})") from None


# --- inputs ------------------------------------------------------------------------------------
def tokenize(text: str, bundle: Path = HERE) -> list[int]:
    tok = metadata(bundle).get("tokenizer")
    if tok is None:
        raise SystemExit("this model has no tokenizer (it was trained on token ids): use --ids")
    if tok["kind"] == "byte":
        return list(text.encode("utf-8", errors="replace"))
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(bundle) / tok["file"])).encode(text,
                                                                      add_special_tokens=False).ids


def detokenize(ids: list[int], bundle: Path = HERE) -> list[str]:
    tok = metadata(bundle).get("tokenizer")
    if tok is None:
        return [str(i) for i in ids]
    if tok["kind"] == "byte":
        return [repr(chr(i)) if i < 256 else f"<{i}>" for i in ids]
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(Path(bundle) / tok["file"]))
    return [repr(t.decode([i])) for i in ids]


def make_inputs(args: argparse.Namespace, bundle: Path = HERE) -> dict:
    names = _names(bundle)
    if args.image:
        image = np.load(args.image).astype(np.float32)
        return {names[0]: image[None] if image.ndim == 3 else image}
    ids = [int(x) for x in args.ids.split(",")] if args.ids else tokenize(args.text, bundle)
    if not ids:
        raise SystemExit("no tokens to run: give --text or --ids")
    inputs = {names[0]: np.array([ids], dtype=np.int64)}
    if "attention_mask" in names:
        inputs["attention_mask"] = np.ones_like(inputs[names[0]])
    return inputs


def top_k(logits: np.ndarray, task: str, k: int) -> list[list[dict]]:
    """Per example: the k most likely next tokens (a language model: at the last position) or
    classes, with their probabilities."""
    rows = logits[:, -1, :] if task == "language_modeling" else logits
    rows = rows.astype(np.float64)
    if task == "multilabel":
        probs = 1.0 / (1.0 + np.exp(-rows))
    else:
        probs = np.exp(rows - rows.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
    order = np.argsort(-rows, axis=-1, kind="stable")[:, :k]
    return [[{"id": int(i), "p": float(p[i])} for i in row] for row, p in zip(order, probs, strict=True)]


# --- what tengine runs in a fresh process --------------------------------------------------------
def cases_of(npz) -> dict[str, dict]:
    """An inputs .npz holds `<case>__<input name>` arrays: {case: {name: array}}."""
    cases: dict[str, dict] = {}
    for key in npz.files:
        case, name = key.split("__", 1)
        cases.setdefault(case, {})[name] = npz[key]
    return cases


def parity(fmt: str, inputs_file: str, out_file: str, latency_iters: int, bundle: Path = HERE) -> dict:
    """Run every case of `inputs_file` through format `fmt`, save the outputs to `out_file`;
    time the `latency_*` cases (p50/p95 ms over `latency_iters` calls after warm-up)."""
    started = time.perf_counter()
    run = load(fmt, bundle)
    report = {"load_s": round(time.perf_counter() - started, 3), "latency": {}}
    cases = cases_of(np.load(inputs_file))
    np.savez(out_file, **{case: run(x) for case, x in cases.items() if not case.startswith("latency_")})
    for case, x in cases.items():
        if case.startswith("latency_") and latency_iters:
            report["latency"][case.removeprefix("latency_")] = time_calls(lambda x=x: run(x),
                                                                           latency_iters)
    return report


def time_calls(call: Callable[[], object], iters: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1e3)
    return {"p50_ms": round(float(np.percentile(times, 50)), 4),
            "p95_ms": round(float(np.percentile(times, 95)), 4), "iters": iters}


def weights(file: str, bundle: Path = HERE) -> dict:
    """Each tensor of a safetensors file: shape, dtype and the sha256 of its bytes."""
    from safetensors.numpy import load_file

    return {name: digest(a) for name, a in load_file(str(Path(bundle) / file)).items()}


def digest(a: np.ndarray) -> dict:
    """A tensor's identity: shape, dtype, sha256 of its bytes."""
    return {"shape": list(a.shape), "dtype": str(a.dtype),
            "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run this exported model (no tengine needed).")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="text to tokenize with the run's tokenizer")
    what.add_argument("--ids", help="comma-separated token ids")
    what.add_argument("--image", help=".npy file: a [C,H,W] or [B,C,H,W] float32 image array")
    what.add_argument("--parity", nargs=2, metavar=("INPUTS_NPZ", "OUT_NPZ"), help=argparse.SUPPRESS)
    what.add_argument("--weights", metavar="FILE", help=argparse.SUPPRESS)
    p.add_argument("--format", help="onnx, pt2, torchscript, ... (default: the first runnable)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--latency-iters", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    args = p.parse_args(argv)
    if args.parity:
        print(json.dumps(parity(args.format, *args.parity, args.latency_iters)))
        return 0
    if args.weights:
        print(json.dumps(weights(args.weights)))
        return 0
    meta = metadata()
    logits = load(args.format)(make_inputs(args))
    preds = top_k(logits, meta["task"], args.top_k)
    if args.json:
        print(json.dumps({"predictions": preds}))
        return 0
    labels = meta.get("labels")
    for n, row in enumerate(preds):
        print(f"example {n}:" if len(preds) > 1 else "top predictions:")
        for r in row:
            name = (detokenize([r["id"]])[0] if meta["task"] == "language_modeling"
                    else labels[r["id"]] if labels else f"class {r['id']}")
            print(f"  {r['id']:>6}  {name:<16} p={r['p']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
