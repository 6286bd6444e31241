"""Tune's schedulers and searchers for a sweep plan, with every decision written down.

    scheduler = build_scheduler(plan, decisions_file)    # None for fifo
    searcher = build_searcher(plan)

ASHA and PBT are Ray Tune's own (`AsyncHyperBandScheduler`, `PopulationBasedTraining`), counted
in engine steps (`time_attr="step"`, which every report carries), so how often a trial
evaluates does not move a rung or a perturbation. The subclasses only observe: each rung
decision (trial, step, value, cutoff, action) and each exploit (trial, donor, donor checkpoint
step, old and new values) is appended to `decisions.jsonl`, so a person can see why a trial
was stopped or cloned. They run in the sweep driver and are pickled into Tune's experiment
state, so they hold a path, never an open file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, PopulationBasedTraining, TrialScheduler

from tengine.registry import Registry
from tengine.sweep.spec import AshaConfig, Domain, PbtConfig, SweepPlan

STEP = "step"


def append_decision(path: str, **record: Any) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


class LoggedASHA(AsyncHyperBandScheduler):
    def __init__(self, decisions: str, **kwargs: Any):
        super().__init__(**kwargs)
        self._decisions = decisions

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if STEP not in result or self._metric not in result:
            return super().on_trial_result(tune_controller, trial, result)
        bracket = self._trial_info[trial.trial_id]
        # the rung this result is judged at, and its cutoff before the result joins it (as
        # _Bracket.on_result computes them)
        rung = next(((m, rec) for m, rec in bracket._rungs
                     if result[STEP] >= m and trial.trial_id not in rec), None)
        cutoff = bracket.cutoff(rung[1]) if rung else None
        action = super().on_trial_result(tune_controller, trial, result)
        if rung is not None:
            append_decision(
                self._decisions, trial=trial.trial_id, step=result[STEP], rung=rung[0],
                metric=self._metric, value=result[self._metric],
                cutoff=None if cutoff is None else float(cutoff) * self._metric_op,
                action="stop" if action == TrialScheduler.STOP else "continue")
        return action


class LoggedPBT(PopulationBasedTraining):
    def __init__(self, decisions: str, max_steps: int, **kwargs: Any):
        super().__init__(**kwargs)
        self._decisions, self._max_steps = decisions, max_steps

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(STEP, 0) >= self._max_steps:  # the run's end: nothing left to continue
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def _exploit(self, tune_controller, trial, trial_to_clone) -> None:
        own, donor = self._trial_state[trial], self._trial_state[trial_to_clone]
        before = {k: trial.config.get(k) for k in self._hyperparam_mutations}
        donor_params = {k: trial_to_clone.config.get(k) for k in before}
        super()._exploit(tune_controller, trial, trial_to_clone)
        checkpoint, donor_step = self._keep_donor_checkpoint(trial)
        append_decision(
            self._decisions, trial=trial.trial_id, step=(own.last_result or {}).get(STEP),
            metric=self._metric, value=(own.last_result or {}).get(self._metric),
            donor=trial_to_clone.trial_id, donor_value=(donor.last_result or {}).get(self._metric),
            donor_checkpoint=checkpoint, donor_step=donor_step, action="exploit",
            donor_params=donor_params, params_before=before,
            params_after={k: trial.config.get(k) for k in before})

    def _keep_donor_checkpoint(self, trial) -> tuple[str | None, int | None]:
        """Copy the donor's checkpoint that the trial will restart from to `exploits/<trial>-<n>`
        beside decisions.jsonl, and point the trial at the copy. The donor keeps training and
        reporting checkpoints while the trial restarts (seconds), and Tune's retention would
        delete the original under it. One copy per trial is kept: its previous one is removed,
        since the trial has trained and checkpointed past it."""
        import shutil

        result = trial.run_metadata.checkpoint_manager._latest_checkpoint_result
        if result is None or result.checkpoint is None:
            return None, None
        root = Path(self._decisions).parent / "exploits"
        earlier = {int(p.name.rsplit("-", 1)[1]): p for p in root.glob(f"{trial.trial_id}-*")
                   if p.name.rsplit("-", 1)[1].isdigit()}
        target = root / f"{trial.trial_id}-{max(earlier, default=0) + 1}"
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        result.checkpoint.to_directory(str(tmp))
        tmp.rename(target)
        for old in earlier.values():
            shutil.rmtree(old, ignore_errors=True)
        result.checkpoint = tune.Checkpoint.from_directory(str(target))
        return str(target), json.loads((target / "manifest.json").read_text())["step"]


def tune_domain(domain: Domain):
    return DOMAINS.get(domain.kind)(domain.args)


DOMAINS: Registry = Registry("search domain", "space")
DOMAINS.register("loguniform", lambda a: tune.loguniform(*a))
DOMAINS.register("uniform", lambda a: tune.uniform(*a))
DOMAINS.register("randint", lambda a: tune.randint(*a))
DOMAINS.register("choice", lambda a: tune.choice(list(a)))
DOMAINS.register("grid", lambda a: tune.grid_search(list(a)))


def param_space(plan: SweepPlan) -> dict[str, Any]:
    return {path: tune_domain(d) for path, d in plan.spec.space.items()}


def build_scheduler(plan: SweepPlan, decisions: Path):
    sched = plan.spec.scheduler
    if isinstance(sched, AshaConfig):
        every = plan.base.training.eval_every_n_steps if plan.metric.startswith("val_") \
            else plan.base.training.log_every_n_steps
        # stop_last_trials=False: a trial at max_steps ends by itself (and writes its summary)
        return LoggedASHA(str(decisions), time_attr=STEP, grace_period=sched.grace_steps or every,
                          max_t=sched.max_steps or plan.max_steps,
                          reduction_factor=sched.reduction_factor, stop_last_trials=False)
    if isinstance(sched, PbtConfig):
        mutations = sched.mutations or plan.spec.space
        return LoggedPBT(
            str(decisions), plan.max_steps, time_attr=STEP, perturbation_interval=sched.interval_steps,
            quantile_fraction=sched.quantile, resample_probability=sched.resample_probability,
            hyperparam_mutations={p: (list(d.args) if d.kind in ("choice", "grid") else tune_domain(d))
                                  for p, d in mutations.items()})
    return None


def build_searcher(plan: SweepPlan, concurrency: int):
    search = plan.spec.search
    if search.name == "optuna":
        try:
            from optuna.samplers import TPESampler
            from ray.tune.search.optuna import OptunaSearch
        except ImportError as err:
            from tengine.errors import ConfigError

            raise ConfigError(f"search optuna needs optuna ({err}); pip install 'tengine[sweep]'") from None
        from ray.tune.search import ConcurrencyLimiter

        return ConcurrencyLimiter(OptunaSearch(sampler=TPESampler(seed=search.seed)), concurrency)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=search.seed, max_concurrent=concurrency)
