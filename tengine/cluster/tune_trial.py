"""One sweep trial: a real engine run, in the trial process or on Ray Train workers.

`run_trial(params, plan=…)` is the Tune function trainable. Its run dir is
`<sweep dir>/trials/<trial id>` (no timestamps: a restored sweep finds it again; the trial owns
it meanwhile, `engine/rundir_lock.py`), where it also leaves `trial.json` (id and current
params) and `starts.jsonl` (one line per start, with what it resumed from). It starts from, in
order: the checkpoint Tune hands it (a PBT donor's, or its own after a restore), else the
newest valid checkpoint of its own run dir, else step 0. Restoring loads weights, optimizer
moments, step and data position; the trial's own (mutated) hyperparameters then replace the
donor's (`engine.optim.apply_hyperparameters`).

- 0 workers: `engine.run` in this process, with `TuneReporter` reporting every evaluation and
  checkpoint to Tune (a checkpoint goes to Tune's storage only when PBT needs it).
- N workers: this process drives a `TorchTrainer` (`cluster.train.fit`) named after the trial.
  Train workers report to Ray Train; `_relay`'s callback in the Train controller, passes
  each report through a Ray queue to this process, which reports it to Tune. The TorchTrainer
  and its workers are owned by this process: when Tune stops or pauses the trial, Ray ends them
  and frees their placement group.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ray import tune

from tengine.engine.reporter import SchedulerReporter
from tengine.sweep.spec import PbtConfig, SweepPlan

TRIALS = "trials"


class TuneReporter(SchedulerReporter):
    def __init__(self, run_dir: str | Path, with_checkpoints: bool):
        super().__init__(run_dir, is_main=True)
        self.with_checkpoints = with_checkpoints

    def emit(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        keep = checkpoint is not None and self.with_checkpoints
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint)) if keep else None)


def trial_dir(plan: SweepPlan, trial_id: str) -> Path:
    return plan.sweep_dir / TRIALS / trial_id


def run_trial(params: dict[str, Any], plan: SweepPlan) -> None:
    from tengine.engine.rundir_lock import hold_run_dir

    os.chdir(plan.workdir)  # Tune starts trials in their own dir; the configs' paths start here
    trial_id = tune.get_context().get_trial_id()
    run_dir = trial_dir(plan, trial_id)
    # the trial owns its run dir before touching it (the engine run or fit inside holds it
    # again: re-entrant in this process); an older attempt still alive makes this one fail
    with hold_run_dir(run_dir):
        _run_trial(params, plan, trial_id, run_dir)


def _run_trial(params: dict[str, Any], plan: SweepPlan, trial_id: str, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    given = tune.get_checkpoint()
    if _report_if_completed(run_dir, plan, given):
        return  # Tune restarted a trial that had ended (a restored sweep): never train it twice
    if given is None:
        _set_aside_unfinished_attempt(run_dir)
    with given.as_directory() if given else contextlib.nullcontext(None) as start:
        resume = start or "auto"
        cfg = plan.trial_config(params, run_dir)
        cfg = cfg.model_copy(update={"checkpoint": cfg.checkpoint.model_copy(update={"resume": str(resume)})})
        (run_dir / "trial.json").write_text(json.dumps({"trial_id": trial_id, "params": params}))
        with (run_dir / "starts.jsonl").open("a") as fh:
            fh.write(json.dumps({"time": time.time(), "params": params,
                                 "resume": str(resume)}) + "\n")
        pbt = isinstance(plan.spec.scheduler, PbtConfig)
        if plan.run_fn is not None:  # run_grid_sweep(..., run_fn): the caller's own run
            result = plan.run_fn(cfg) or {}
            tune.report({"step": result.get("steps", 0), **{
                k: v for k, v in result.items() if isinstance(v, (int, float)) and v == v}})
        elif plan.resources.workers == 0:
            from tengine.engine import run

            run(cfg, reporter=TuneReporter(run_dir, with_checkpoints=pbt), run_dir=str(run_dir))
        else:
            _fit_on_workers(cfg, run_dir, trial_id, with_checkpoints=pbt)


def _set_aside_unfinished_attempt(run_dir: Path) -> None:
    """An attempt killed before its first checkpoint (the driver died) left records but nothing
    to resume: move them to `attempts/<n>/`, so this start is step 1 of a clean run dir (the
    engine would otherwise move the whole trial dir aside)."""
    if any((run_dir / "checkpoints").glob("step_*/manifest.json")):
        return
    leftovers = [p for p in (run_dir / "metrics.jsonl", run_dir / "summary.json",
                             run_dir / "checkpoints") if p.exists()]
    if not leftovers:
        return
    target = run_dir / "attempts" / str(len(list((run_dir / "attempts").glob("*"))) + 1)
    target.mkdir(parents=True)
    for p in leftovers:
        p.rename(target / p.name)


def _report_if_completed(run_dir: Path, plan: SweepPlan, given) -> bool:
    """A trial whose run completed before (the driver died before Tune saved its end, or Tune
    restarts it from its own final checkpoint) reports its last evaluation again and is done. A
    checkpoint from before the end (a PBT donor's) means: train."""
    summary_file = run_dir / "summary.json"
    if not summary_file.is_file():
        return False
    summary = json.loads(summary_file.read_text())
    if summary.get("status") != "completed" or summary.get("steps") != summary.get("max_steps"):
        return False
    if given is not None:
        with given.as_directory() as path:
            manifest = Path(path) / "manifest.json"
            if not manifest.is_file() or json.loads(manifest.read_text())["step"] < summary["steps"]:
                return False
    from tengine.engine.reporter import REPORTED
    from tengine.files import read_metrics

    last = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("split") == "val"]
    report = {"step": summary["steps"], "train_loss": summary.get("train_loss"),
              **{k: last[-1][k] for k in REPORTED if last and last[-1].get(k) is not None}}
    tune.report({k: v for k, v in report.items() if v is not None})
    return True


def _fit_on_workers(cfg, run_dir: Path, trial_id: str, with_checkpoints: bool) -> None:
    from ray.util.queue import Empty, Queue

    from tengine.cluster.train import fit

    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    outcome: dict[str, Any] = {}

    def train() -> None:
        try:
            fit(cfg, run_dir=run_dir, name=trial_id, callbacks=[_relay(queue)])
        except BaseException as err:  # noqa: BLE001 — re-raised in the trial's thread below
            outcome["error"] = err

    thread = threading.Thread(target=train, name=f"train-{trial_id}", daemon=True)
    thread.start()
    try:
        while thread.is_alive() or not queue.empty():
            try:
                metrics = queue.get(timeout=0.5)
            except Empty:
                continue
            path = metrics.get("tengine_checkpoint")
            keep = with_checkpoints and path
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(path) if keep else None)
    finally:
        queue.shutdown(force=True)
    if "error" in outcome:
        raise outcome["error"]


def _relay(queue):
    """A Ray Train callback (runs in the Train controller) that hands rank 0's report to `queue`;
    the queue holds one report, so Train waits until Tune has seen the last one."""
    from ray.train.v2.api.callback import UserCallback

    class Relay(UserCallback):
        def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
            queue.put(dict(metrics[0]))

    return Relay()
