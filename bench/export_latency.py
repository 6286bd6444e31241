"""Export latency: PyTorch eager vs torch.export (pt2) vs onnxruntime on the quickstart GPT, at
batch 1 and 8, all three in this one process, interleaved, on the same real validation batch.

    .venv/bin/python bench/export_latency.py [--iters 200] [--rounds 5] [--steps 30]

Trains the quickstart config for `--steps` steps in this process (one rank, the same model and
sequence length 128), exports it with `tengine export`'s own code (parity checked), then loads
the bundle's pt2 and ONNX files with the bundle's inference.py runtime and times every
(runtime, batch) pair in `--rounds` interleaved rounds of `--iters` calls after warm-up, so a
drift in machine load hits all of them alike. p50/p95 per call over all rounds. Threads: torch's
default (one per core) for eager and pt2, onnxruntime's default for ORT.
Last lines: `pt2_speedup_b8=<eager p50 / pt2 p50>` and `ort_speedup_b8=<eager p50 / ort p50>`.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent


def _runtime(bundle: Path):
    """The bundle's own inference.py, imported as a module (what a serving process would do)."""
    spec = importlib.util.spec_from_file_location("bundle_inference", bundle / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()

    from tengine.config import load_config
    from tengine.engine import run
    from tengine.export import export
    from tengine.export.formats import Positional
    from tengine.export.parity import load_cases

    with tempfile.TemporaryDirectory(prefix="tengine-bench-export-") as tmp:
        cfg = load_config(REPO / "configs/quickstart.yaml", [
            "distributed.workers=0", "distributed.backend=single", f"training.max_steps={args.steps}",
            "training.eval_every_n_steps=0", "checkpoint.every_n_steps=0", "logging.plots=false",
            "logging.progress_bar=false", f"logging.root={tmp}", "name=qs"])
        run(cfg)
        meta = export(Path(tmp) / "qs", Path(tmp) / "bundle", latency_iters=0,
                      progress=lambda *a: None)
        bundle = Path(meta["bundle"])
        worst = {f: p["worst"]["max_abs"] for f, p in meta["parity"].items()}
        print(f"quickstart GPT ({meta['model']['parameters']:,} parameters), seq "
              f"{meta['seq_max']}; parity max abs: "
              + ", ".join(f"{f} {v:.1e}" for f, v in worst.items()))
        runtime = _runtime(bundle)
        names = [i["name"] for i in meta["inputs"]]
        from tengine.export.model import rebuild

        eager = Positional(rebuild(bundle, meta), names).eval()

        def eager_run(x: dict) -> np.ndarray:
            with torch.inference_mode():
                return eager(*(torch.from_numpy(x[n]) for n in names)).numpy()

        runners = {"eager": eager_run, "pt2": runtime.load("pt2", bundle),
                   "ort": runtime.load("onnx", bundle)}
        cases = {int(c.removeprefix("latency_b")): x for c, x in
                 load_cases(bundle / "parity_inputs.npz").items() if c.startswith("latency_")}
        times: dict[tuple[str, int], list[float]] = {(r, b): [] for r in runners for b in cases}
        for name, fn in runners.items():  # warm-up, and the outputs agree
            for x in cases.values():
                for _ in range(10):
                    out = fn(x)
                assert np.allclose(out, eager_run(x), atol=1e-4), name
        for _ in range(args.rounds):
            for (name, batch), bucket in times.items():
                fn, x = runners[name], cases[batch]
                for _ in range(args.iters):
                    t = time.perf_counter()
                    fn(x)
                    bucket.append((time.perf_counter() - t) * 1e3)
    p50 = {k: float(np.percentile(v, 50)) for k, v in times.items()}
    p95 = {k: float(np.percentile(v, 95)) for k, v in times.items()}
    print(f"{'runtime':<8} {'batch':>5} {'p50 ms':>9} {'p95 ms':>9} {'vs eager':>9}")
    for (name, batch) in times:
        print(f"{name:<8} {batch:>5} {p50[name, batch]:>9.3f} {p95[name, batch]:>9.3f} "
              f"{p50['eager', batch] / p50[name, batch]:>8.2f}x")
    print(f"torch threads {torch.get_num_threads()}, {args.rounds} rounds × {args.iters} calls")
    print(f"pt2_speedup_b8={p50['eager', 8] / p50['pt2', 8]:.2f}")
    print(f"ort_speedup_b8={p50['eager', 8] / p50['ort', 8]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
