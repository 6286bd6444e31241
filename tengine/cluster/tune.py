"""The sweep driver: a sweep plan → a Ray Tune `Tuner` whose every trial is a real engine run.

    from tengine.cluster.tune import run_sweep
    report = run_sweep(load_sweep("configs/sweeps/quickstart_lr.yaml"))

The sweep dir (`<root>/<name>`) holds Tune's experiment state (`tune/`), one engine run dir per
trial (`trials/<trial id>/`), `decisions.jsonl`, and after the sweep `results.csv`,
`results.json`, `plots/metric.png` and `best/`. Running the same sweep again resumes it: Tune
restores its state, finished trials are kept, unfinished ones continue from their newest
checkpoint. With no address and no RAY_ADDRESS a Ray of its own starts in this process and
stops with it; `address="auto"` joins a running cluster.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from ray import tune

from tengine.cluster.tune_schedulers import build_scheduler, build_searcher, param_space
from tengine.cluster.tune_trial import run_trial
from tengine.engine.reporter import write_json
from tengine.errors import ConfigError, TengineError
from tengine.sweep.report import DECISIONS, build_report, format_table, write_report
from tengine.sweep.spec import PbtConfig, SweepPlan

log = logging.getLogger("tengine")
EXPERIMENT = "tune"


class Progress(tune.Callback):
    """One line per finished trial, and at most one every `every_s` while trials report."""

    def __init__(self, plan: SweepPlan, every_s: float = 10.0):
        self.plan, self.every_s, self.last = plan, every_s, 0.0
        self.best: tuple[float, str] | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.plan.metric)
        if value is not None:
            sign = 1 if self.plan.mode == "min" else -1
            if self.best is None or sign * value < sign * self.best[0]:
                self.best = (value, trial.trial_id)
        if time.monotonic() - self.last >= self.every_s:
            self._line(trials)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._line(trials)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._line(trials)

    def _line(self, trials) -> None:
        self.last = time.monotonic()
        states = [t.status for t in trials]
        best = f"; best {self.plan.metric} {self.best[0]:.4f} ({self.best[1]})" if self.best else ""
        print(f"sweep {self.plan.name}: {states.count('TERMINATED')}/{self.plan.num_trials()} done, "
              f"{states.count('RUNNING')} running, {states.count('ERROR')} failed{best}", flush=True)


def check_resources(plan: SweepPlan, have: dict[str, float], embedded: bool) -> int:
    """How many trials run at once; an error (embedded Ray) or a warning (a cluster that may
    grow) when not even one trial fits."""
    fits = plan.resources.fits(have)
    if fits > 0:
        return min(fits, plan.spec.max_concurrent or fits)
    r, need = plan.resources, plan.resources.trial()
    parts = (f"1 CPU for the trial's driver + {r.workers} workers × {r.cpus_per_worker:g} "
             "resources.cpus_per_worker" if r.workers else "resources.cpus_per_worker")
    short = [f"{k} {need[k]:g} ({parts if k == 'CPU' else f'{r.workers or 1} × {r.gpus_per_worker:g} GPUs'})"
             f" but the cluster has {have.get(k, 0):g}" for k in need if need[k] > have.get(k, 0)]
    message = (f"resources: one trial needs {'; '.join(short)}: no trial can ever start; lower "
               "resources.workers / cpus_per_worker / gpus_per_worker, or add nodes")
    if embedded:
        raise ConfigError(message)
    log.warning("%s (waiting for the autoscaler)", message)
    return plan.spec.max_concurrent or 1


def check_same_sweep(plan: SweepPlan) -> None:
    """A rerun resumes the sweep in its dir; one whose file changed since would silently resume
    the old one (Tune restores its own state), so that is an error that names the fields."""
    meta = plan.sweep_dir / "sweep.json"
    if not meta.is_file():
        return
    old = json.loads(meta.read_text())["spec"]
    new = plan.spec.model_dump(mode="json")
    changed = sorted(k for k in new.keys() | old.keys() if k != "root" and old.get(k) != new.get(k))
    if changed:
        raise ConfigError(f"{plan.sweep_dir} holds sweep '{plan.name}' with other {', '.join(changed)}; "
                          "a rerun resumes a sweep as it was: give the sweep another name, or "
                          "remove that dir to start afresh")


def _trainable(plan: SweepPlan):
    own = plan.resources.process()
    return tune.with_resources(tune.with_parameters(run_trial, plan=plan),
                               {"cpu": own["CPU"], "gpu": own["GPU"]})


def _tuner(plan: SweepPlan, concurrency: int) -> tune.Tuner:
    sweep_dir = plan.sweep_dir
    trainable = _trainable(plan)
    if tune.Tuner.can_restore(sweep_dir / EXPERIMENT):
        print(f"sweep {plan.name}: resuming from {sweep_dir / EXPERIMENT}", flush=True)
        return tune.Tuner.restore(str(sweep_dir / EXPERIMENT), trainable, resume_unfinished=True,
                                  resume_errored=True)
    pbt = isinstance(plan.spec.scheduler, PbtConfig)
    return tune.Tuner(
        trainable,
        param_space=param_space(plan),
        tune_config=tune.TuneConfig(
            metric=plan.metric, mode=plan.mode, num_samples=plan.spec.num_samples,
            search_alg=build_searcher(plan, concurrency),
            scheduler=build_scheduler(plan, sweep_dir / DECISIONS),
            time_budget_s=plan.spec.time_budget_s,
            # in-process trials reuse their actor (no torch import per trial); a trial that
            # drives Ray Train workers gets a fresh one, so stopping it ends its TorchTrainer
            reuse_actors=plan.resources.workers == 0),
        run_config=tune.RunConfig(
            name=EXPERIMENT, storage_path=str(sweep_dir), verbose=0, callbacks=[Progress(plan)],
            # PBT clones a donor's checkpoint some reports after the donor saved it: keep a few
            checkpoint_config=tune.CheckpointConfig(num_to_keep=4 if pbt else 1),
            failure_config=tune.FailureConfig(max_failures=0)),
    )


def run_sweep(plan: SweepPlan, address: str | None = None) -> dict[str, Any]:
    """Run (or resume) the sweep; returns the report (also written to the sweep dir)."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    started_here = not ray.is_initialized()
    if started_here and address:
        from tengine.cluster.client import join_cluster

        join_cluster(address, namespace=None, log_to_driver=True, configure_logging=False)
    elif started_here:
        # Trials with Ray Train workers need the dashboard: Ray Train's PlacementGroupCleaner
        # asks the State API (served by it) whether a stopped trial's TorchTrainer is gone, and
        # without it the trial's placement group outlives the trial, so the next Train trial
        # waits for CPUs forever. In-process trials do without (~3 s of start-up, and its
        # processes' CPU time, which on a laptop the trials would rather have).
        ray.init(address="local", log_to_driver=True, configure_logging=False,
                 include_dashboard=plan.resources.workers > 0)
    try:
        concurrency = check_resources(plan, ray.cluster_resources(), embedded=not address)
        sweep_dir = plan.sweep_dir
        check_same_sweep(plan)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_json(sweep_dir / "sweep.json", {
            "name": plan.name, "metric": plan.metric, "mode": plan.mode,
            "num_samples": plan.num_trials(), "source": str(plan.source),
            "spec": plan.spec.model_dump(mode="json")})
        print(f"sweep {plan.name}: {plan.num_trials()} trials, {concurrency} at a time, "
              f"{plan.spec.search.name} search, {plan.spec.scheduler.name} scheduler; "
              f"dir {sweep_dir}", flush=True)
        results = _tuner(plan, concurrency).fit()
        errors = [r.error for r in results if r.error is not None]
    except TengineError:
        raise
    except Exception as err:  # noqa: BLE001 — Tune's own failures, said plainly
        raise TengineError(f"sweep {plan.name} failed: {type(err).__name__}: {err}") from err
    finally:
        if started_here:
            ray.shutdown()
    report = build_report(plan.sweep_dir)
    report["errors"] = [f"{type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ''}" for e in errors]
    return write_report(plan.sweep_dir, report)


def dry_run(plan: SweepPlan, address: str | None = None) -> str:
    """What the sweep would run, and on what, without starting a trial (nor Ray, when embedded)."""
    have = {"CPU": float(os.cpu_count() or 1), "GPU": 0.0}
    if address or os.environ.get("RAY_ADDRESS"):
        import ray

        from tengine.cluster.client import join_cluster

        join_cluster(address or os.environ["RAY_ADDRESS"], namespace=None)
        have = ray.cluster_resources()
    concurrency = check_resources(plan, have, embedded=not address)
    s, r = plan.spec, plan.resources
    lines = [f"sweep {plan.name}: {plan.num_trials()} trials of {plan.source.parent / s.base}"
             f" ({plan.max_steps or 'epochs'} steps each), metric {plan.metric} ({plan.mode})",
             f"search {s.search.name} (seed {s.search.seed}), scheduler "
             + json.dumps(s.scheduler.model_dump(mode='json'))]
    lines += [f"  {path}: {d.kind} {list(d.args)}" for path, d in s.space.items()]
    where = "in the trial process" if r.workers == 0 else f"on {r.workers} Ray Train workers"
    lines.append(f"each trial {where}, reserving {plan.resources.trial()}; {concurrency} at a time "
                 f"on {dict((k, v) for k, v in have.items() if k in ('CPU', 'GPU'))}")
    if plan.grid_points() != [{}]:
        lines.append(f"grid: {len(plan.grid_points())} points × {s.num_samples} samples")
    lines.append(f"dir: {plan.sweep_dir}")
    return "\n".join(lines)


__all__ = ["dry_run", "format_table", "run_sweep"]
