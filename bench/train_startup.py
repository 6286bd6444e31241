"""Train start-up: `tengine train --workers 2` for one step vs a bare Ray Train fit, whole processes.

    .venv/bin/python bench/train_startup.py [--repeats 2] [--warmup 1] [--fast-health-check]

Side A runs `python -m tengine train configs/quickstart.yaml --workers 2 --set
training.max_steps=1` (a fresh run dir, `--resume never`) as a subprocess; side B runs a bare
script as a subprocess: `ray.init(address="local")`, a `TorchTrainer` of 2 workers
(ScalingConfig(num_workers=2), gloo) whose train function does one `all_reduce`, `fit()`,
`ray.shutdown()`. Both are timed as whole processes (interpreter start to exit), so A's extra
time is everything tengine adds to a Ray Train run: its imports, config and preflight in the
driver; in every worker the engine's imports (Accelerate; torch._dynamo, which any torch.optim
optimizer imports), data and model building, DDP set-up, the step, the final evaluation,
checkpoint, plots and summary. RAY_ADDRESS is unset for both (each starts its own local Ray).
Ray Train's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S and a fit ends
at the first poll after its workers return: B keeps Ray's default (2 s), A tengine's own
(0.5 s, set by `cluster/train.py` unless the variable is set), as each would run for a user;
`--fast-health-check` first measures both with the variable at 0.1 s, which leaves only what
tengine's own work costs. `--warmup` A/B pairs run first and are not
counted (the first run reads its libraries from a cold file cache). Then runs alternate A/B
`--repeats` times and the median of each side is compared.
Last line: `startup_ratio=<A/B>` (target ≤ 1.2).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BARE = '''
import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer


def train_func():
    t = torch.ones(1)
    dist.all_reduce(t)
    assert t.item() == 2.0


ray.init(address="local", log_to_driver=True, configure_logging=False)
trainer = TorchTrainer(train_func, torch_config=TorchConfig(backend="gloo"),
                       scaling_config=ScalingConfig(num_workers=2),
                       run_config=RunConfig(name="bare", storage_path=STORAGE))
trainer.fit()
ray.shutdown()
'''


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}:\n"
                 + "".join(log.read_text().splitlines(keepends=True)[-30:]))
    return wall


def measure(repeats: int, warmup: int, extra_env: dict[str, str], tmp: Path,
            tag: str) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(extra_env)
    python = sys.executable
    script = tmp / "bare_fit.py"
    script.write_text(f"STORAGE = {str(tmp / 'bare-ray')!r}\n" + BARE)
    engine, bare = [], []
    for i in range(warmup + repeats):
        run_dir = tmp / f"run-{tag}-{i}"
        e = timed([python, "-m", "tengine", "train", "configs/quickstart.yaml", "--workers", "2",
                   "--set", "training.max_steps=1", "--run-dir", str(run_dir), "--resume", "never"],
                  env, tmp / f"engine-{tag}-{i}.log")
        if not (run_dir / "summary.json").is_file():
            sys.exit(f"tengine train wrote no {run_dir / 'summary.json'}")
        b = timed([python, str(script)], env, tmp / f"bare-{tag}-{i}.log")
        what = "warm-up, not counted" if i < warmup else f"repeat {i - warmup + 1}"
        print(f"  {what}: tengine train {e:.1f} s, bare TorchTrainer {b:.1f} s", flush=True)
        if i >= warmup:
            engine.append(e)
            bare.append(b)
    return statistics.median(engine), statistics.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed A/B pairs first (the first run pays cold file caches)")
    parser.add_argument("--fast-health-check", action="store_true",
                        help="also measure with RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tengine-startup-") as tmp:
        warmup = args.warmup
        if args.fast_health_check:
            print("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.1:")
            e, b = measure(args.repeats, warmup, {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"},
                           Path(tmp), "fast")
            print(f"tengine train {e:.1f} s, bare TorchTrainer {b:.1f} s, ratio {e / b:.2f} "
                  "(health check 0.1 s)")
            print("Ray defaults:")
            warmup = 0  # the caches are warm now
        engine, bare = measure(args.repeats, warmup, {}, Path(tmp), "default")
    print(f"tengine train (2 workers, 1 step): {engine:.1f} s (median of {args.repeats})")
    print(f"bare TorchTrainer (2 workers, 1 all_reduce): {bare:.1f} s")
    print(f"startup_ratio={engine / bare:.2f}")


if __name__ == "__main__":
    main()
