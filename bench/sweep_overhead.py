"""Sweep overhead: 4 quickstart runs through `tengine sweep` (Ray Tune) vs the same 4 back to back.

    .venv/bin/python bench/sweep_overhead.py [--steps 200] [--trials 4]

Both sides train the same tiny GPT on the quickstart's Markov data in one process per run
(no Ray Train workers), with the same four learning rates: once as a sweep (grid search over
optim.lr, fifo scheduler, 1 trial at a time: `tengine.cluster.tune.run_sweep`, which starts its
own Ray, runs every trial in a Tune actor and writes the report), once as four `engine.run`
calls in this process. The sweep's time includes starting and stopping Ray, the trial actor's
imports and the report; each run evaluates 4 times, and every evaluation is a Tune report.
Last line: `sweep_overhead_ratio=<sweep/back-to-back>` (target ≤ 1.25).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

from tengine.config import load_config

REPO = Path(__file__).resolve().parents[1]


def settings(steps: int) -> list[str]:
    return ["distributed.workers=0", "distributed.backend=single", "data.seq_len=128",
            "training.micro_batch_size=32", f"training.max_steps={steps}",
            f"training.eval_every_n_steps={steps // 4}", "training.eval_batches=8",
            "training.log_every_n_steps=10", "checkpoint.every_n_steps=0",
            "logging.plots=false", "logging.progress_bar=off", "checkpoint.resume=never"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    lrs = [round(1e-3 * 2 ** i, 6) for i in range(args.trials)]

    from tengine.cluster.tune import run_sweep
    from tengine.engine import run
    from tengine.sweep import load_sweep

    with tempfile.TemporaryDirectory(prefix="tengine-bench-") as tmp:
        t0 = time.perf_counter()
        direct = []
        for i, lr in enumerate(lrs):
            cfg = load_config(REPO / "configs/quickstart.yaml",
                              [*settings(args.steps), f"optim.lr={lr}", f"logging.root={tmp}/runs", f"name=r{i}"])
            direct.append(run(cfg))
        back_to_back = time.perf_counter() - t0

        sweep = Path(tmp) / "sweep.yaml"
        sweep.write_text(yaml.safe_dump({
            "name": "bench", "base": str(REPO / "configs/quickstart.yaml"), "root": f"{tmp}/sweeps",
            "overrides": settings(args.steps), "space": {"optim.lr": {"grid": lrs}},
            "search": {"name": "grid"}, "num_samples": 1, "max_concurrent": 1,
            # one trial at a time owns the machine, as the back-to-back runs do: Ray gives a trial
            # process as many torch threads (OMP_NUM_THREADS) as the CPUs it reserves
            "resources": {"workers": 0, "cpus_per_worker": os.cpu_count() or 1}}))
        t0 = time.perf_counter()
        report = run_sweep(load_sweep(sweep))
        swept = time.perf_counter() - t0
        assert len(report["trials"]) == args.trials and not report.get("errors"), report
        trials = [json.loads((Path(r["run_dir"]) / "summary.json").read_text()) for r in report["trials"]]

    def engine(summaries: list[dict]) -> str:  # the runs' own time and speed, start-up excluded
        wall = sum(s["wall_s"] for s in summaries)
        tok_s = sum(s["tokens_per_s"] for s in summaries) / len(summaries)
        return f"engine {wall:.1f} s, {tok_s:.0f} tokens/s"

    print(f"back to back: {engine(direct)}; in the trials: {engine(trials)}")

    print(f"{args.trials} runs of {args.steps} steps: back to back {back_to_back:.1f} s "
          f"({back_to_back / args.trials:.1f} s/run), through tengine sweep {swept:.1f} s "
          f"(+{(swept - back_to_back) / args.trials:.1f} s/trial)")
    print(f"sweep_overhead_ratio={swept / back_to_back:.3f}")


if __name__ == "__main__":
    main()
