"""The sweep file: typed, validated before any trial starts. No Ray, no torch.

    plan = load_sweep("configs/sweeps/quickstart_lr.yaml")
    plan.trial_config({"optim.lr": 3e-3}, run_dir)      # a validated TengineConfig

```yaml
name: quickstart_lr
base: ../quickstart.yaml           # resolved like `tengine train` (extends, presets)
overrides: [training.max_steps=200] # --set style, applied to the base before the space
space:
  optim.lr: {loguniform: [1.0e-4, 3.0e-2]}
  training.micro_batch_size: {choice: [8, 16]}
metric: val_loss                    # default: the base's checkpoint.monitor
num_samples: 8
search: {name: random, seed: 0}     # random | grid | optuna (TPE)
scheduler: {name: asha, grace_steps: 50, reduction_factor: 3}   # fifo | asha | pbt
resources: {workers: 0, cpus_per_worker: 1}   # 0 workers: the engine runs in the trial process
```

Every budget and interval is in engine steps. Every space path is checked against the config
schema (an unknown one names the closest real one), and the base config is validated with each
bound and each listed value of every dimension, so a bad value fails here, not in trial 5.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PositiveInt, ValidationError, model_validator

from tengine.config.loader import (
    apply_overrides,
    describe_error,
    load_raw,
    read_yaml,
    set_value,
    validate,
)
from tengine.config.schema import Section, TengineConfig
from tengine.errors import ConfigError
from tengine.registry import did_you_mean

DOMAIN_KINDS = ("loguniform", "uniform", "randint", "choice", "grid")
# what the engine reports at an evaluation (val_*) or a train log (train_loss)
REPORTED_METRICS = {"val_loss": "min", "val_ppl": "min", "val_accuracy": "max", "train_loss": "min"}


class Domain(BaseModel):
    """One dimension: exactly one of `loguniform: [lo, hi]`, `uniform: [lo, hi]`,
    `randint: [lo, hi)`, `choice: [values]`, `grid: [values]`."""

    model_config = {"extra": "forbid"}
    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list[Any] | None = None
    grid: list[Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Domain:
        given = [k for k in DOMAIN_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(DOMAIN_KINDS)} (got "
                             f"{', '.join(given) or 'none'})")
        kind, args = given[0], getattr(self, given[0])
        if kind in ("choice", "grid") and not args:
            raise ValueError(f"{kind} is empty; list at least one value")
        if kind in ("loguniform", "uniform", "randint") and not args[0] < args[1]:
            raise ValueError(f"{kind} [{args[0]}, {args[1]}]: the low bound must be below the high one")
        if kind == "loguniform" and args[0] <= 0:
            raise ValueError(f"loguniform [{args[0]}, {args[1]}]: both bounds must be > 0 (it "
                             "samples the logarithm); use uniform for a range that includes 0")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in DOMAIN_KINDS if getattr(self, k) is not None)

    @property
    def args(self) -> Any:
        return getattr(self, self.kind)

    def probes(self) -> list[Any]:
        """The values that decide whether every sample is valid: both bounds, or every value."""
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        return list(self.args)


class SearchConfig(Section):
    name: Literal["random", "grid", "optuna"] = Field(
        "random", description="`random` (seeded), `grid` (every combination of `grid` dims, "
        "`num_samples` times), `optuna` (TPE, seeded; needs the `sweep` extra).")
    seed: int = Field(0, ge=0, description="Seed of the search: the same seed, the same trials.")


class FifoConfig(Section):
    name: Literal["fifo"] = "fifo"


class AshaConfig(Section):
    name: Literal["asha"] = "asha"
    grace_steps: PositiveInt | None = Field(
        None, description="Steps before a trial can be stopped (the first rung); null = the "
        "base's eval cadence. A multiple of `training.eval_every_n_steps`.")
    max_steps: PositiveInt | None = Field(None, description="Last rung; null = training.max_steps.")
    reduction_factor: int = Field(3, ge=2, description="Rung spacing; a trial continues past a "
                                  "rung only if it is in the best 1/reduction_factor there.")


class PbtConfig(Section):
    name: Literal["pbt"] = "pbt"
    interval_steps: PositiveInt = Field(
        ..., description="Steps between perturbations (a multiple of the eval cadence); every "
        "trial checkpoints at these steps.")
    quantile: float = Field(0.25, gt=0, le=0.5, description="Bottom fraction that exploits the top.")
    resample_probability: float = Field(0.25, ge=0, le=1, description="Chance that a mutated "
                                        "value is resampled instead of scaled ×0.8/×1.2.")
    mutations: dict[str, Domain] = Field(
        default_factory=dict, description="Dimensions PBT mutates; empty = the whole `space`.")


class ResourcesConfig(Section):
    workers: int | None = Field(None, ge=0, description="Ray Train workers per trial; 0 = the "
                                "engine runs in the trial process; null = the base's.")
    cpus_per_worker: float | None = Field(None, gt=0, description="CPUs per worker (per trial "
                                          "when workers is 0); null = the base's.")
    gpus_per_worker: float | None = Field(None, ge=0, description="GPUs per worker; null = the base's.")


class SweepConfig(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Sweep name; "
                      "its directory is `<root>/<name>`.")
    base: str = Field(..., description="Config of every trial (relative to the sweep file).")
    overrides: list[str] = Field(default_factory=list, description="KEY=VALUE applied to the base.")
    space: dict[str, Domain] = Field(..., min_length=1, description="Dotted config path → domain.")
    metric: str | None = Field(None, description="Metric to optimise; null = checkpoint.monitor.")
    mode: Literal["min", "max"] | None = Field(None, description="null = what the metric wants.")
    num_samples: PositiveInt = Field(8, description="Trials (grid: repeats of the whole grid).")
    max_concurrent: PositiveInt | None = Field(None, description="null = what the cluster fits.")
    time_budget_s: float | None = Field(None, gt=0, description="Stop the sweep after this long.")
    search: SearchConfig = Field(default_factory=SearchConfig)
    scheduler: Annotated[FifoConfig | AshaConfig | PbtConfig, Field(discriminator="name")] = \
        Field(default_factory=FifoConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    root: str = Field("runs/sweeps", description="Parent of sweep dirs (relative to the cwd).")


@dataclass
class Resources:
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float

    def process(self) -> dict[str, float]:
        """What the trial's own process reserves: the engine's share, or 1 CPU for the driver of
        a TorchTrainer (whose workers have a placement group of their own)."""
        if self.workers == 0:
            return {"CPU": self.cpus_per_worker, "GPU": self.gpus_per_worker}
        return {"CPU": 1.0, "GPU": 0.0}

    def trial(self) -> dict[str, float]:
        """What one trial reserves in all: its process plus its workers."""
        own = self.process()
        return {"CPU": own["CPU"] + self.workers * self.cpus_per_worker,
                "GPU": own["GPU"] + self.workers * self.gpus_per_worker}

    def fits(self, have: dict[str, float]) -> int:
        """Trials the resources `have` fit at once (0 = none ever)."""
        need = self.trial()
        return int(min(math.floor(have.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0))


@dataclass
class SweepPlan:
    """A validated sweep: the spec plus everything resolved from the base config."""

    spec: SweepConfig
    source: Path  # the sweep file
    base_data: dict  # the base config mapping after `overrides`, before the space
    base: TengineConfig
    metric: str
    mode: str
    resources: Resources
    max_steps: int
    workdir: Path  # the driver's working directory: relative paths of the configs start here
    run_fn: Callable[[TengineConfig], dict] | None = None  # None = engine.run (run_grid_sweep's hook)
    # the experiment DB the trials are recorded in (`tengine sweep --store`); None: the base
    # config's logging.db.store, else `runs/control/tengine.db` of the sweep's directory
    store: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def sweep_dir(self) -> Path:
        return self.workdir / self.spec.root / self.spec.name

    def trial_config(self, params: dict[str, Any], run_dir: str | Path) -> TengineConfig:
        from tengine.control.store import default_store_uri

        data = copy.deepcopy(self.base_data)
        for path, value in params.items():
            set_value(data, path, value, what=f"space.{path}")
        for path, value in self._resource_fields().items():
            set_value(data, path, value)
        set_value(data, "name", Path(run_dir).name)
        set_value(data, "logging.root", str(Path(run_dir).parent))  # cfg.run_dir() is run_dir
        # the experiment DB records the trial with its sweep, in the store `tengine runs` and
        # `--register` use by default (`runs/` of the sweep's directory; not of the trials dir,
        # which logging.root now is)
        set_value(data, "logging.sweep", self.name)
        store = self.store or self.base.logging.db.store
        set_value(data, "logging.db.store", store or default_store_uri(self.workdir / "runs"))
        return validate(data)

    def _resource_fields(self) -> dict[str, Any]:
        r, backend = self.resources, self.base.distributed.backend
        if r.workers == 0:
            backend = "single"
        elif backend == "single":
            backend = "ddp"
        fields = {"distributed.workers": r.workers, "distributed.backend": backend,
                  "distributed.cpus_per_worker": r.cpus_per_worker,
                  "distributed.gpus_per_worker": r.gpus_per_worker,
                  "logging.progress_bar": "off"}  # many trials at once: their bars are noise
        if isinstance(self.spec.scheduler, PbtConfig):  # a fresh checkpoint at every perturbation
            fields["checkpoint.every_n_steps"] = self.spec.scheduler.interval_steps
        return fields

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the `grid` dims (one empty point when there are none)."""
        grid = {p: d.args for p, d in self.spec.space.items() if d.kind == "grid"}
        return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]

    def num_trials(self) -> int:
        return self.spec.num_samples * len(self.grid_points())


def schema_paths(model: type[BaseModel] = TengineConfig, prefix: str = "") -> dict[str, Any]:
    """Every leaf path of the config schema → its field (dict-typed fields accept any subkey)."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(schema_paths(ann, f"{prefix}{name}."))
        else:
            out[prefix + name] = field
    return out


def check_path(path: str, where: str) -> None:
    paths = schema_paths()
    if path in paths:
        return
    if any(path.startswith(p + ".") and getattr(f.annotation, "__origin__", None) is dict
           for p, f in paths.items()):
        return  # model.kwargs.depth and the like: free-form mappings
    raise ConfigError(f"{where}.{path}: unknown config path{did_you_mean(path, list(paths))}; "
                      "paths are dotted config fields, e.g. optim.lr or training.micro_batch_size")


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepPlan:
    """Read and validate a sweep file (`overrides` are KEY=VALUE for the sweep file itself)."""
    path = Path(path)
    raw = apply_overrides(read_yaml(path, "sweep file"), overrides)
    try:
        spec = SweepConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError([describe_error(e, SweepConfig) for e in err.errors()]) from None
    return plan_sweep(spec, path)


def plan_sweep(spec: SweepConfig, source: Path, base_data: dict | None = None) -> SweepPlan:
    """Validate `spec` (read from `source`); `base_data` replaces the base file's mapping."""
    if base_data is None:
        base_file = Path(spec.base) if Path(spec.base).is_absolute() else source.parent / spec.base
        base_data = load_raw(base_file)
    base_data = apply_overrides(base_data, spec.overrides)
    try:
        base = validate(base_data)
    except ConfigError as err:
        raise ConfigError([f"base {spec.base}: {p}" for p in err.problems]) from None
    dims = dict(spec.space)
    if isinstance(spec.scheduler, PbtConfig):
        dims.update({p: d for p, d in spec.scheduler.mutations.items()})
    for p in spec.space:
        check_path(p, "space")
    if isinstance(spec.scheduler, PbtConfig):
        for p in spec.scheduler.mutations:
            check_path(p, "scheduler.mutations")
    r = spec.resources
    resources = Resources(
        workers=base.distributed.workers if r.workers is None else r.workers,
        cpus_per_worker=r.cpus_per_worker or base.distributed.cpus_per_worker,
        gpus_per_worker=base.distributed.gpus_per_worker if r.gpus_per_worker is None
        else r.gpus_per_worker)
    metric = spec.metric or base.checkpoint.monitor
    plan = SweepPlan(spec, source.resolve(), base_data, base, metric,
                     spec.mode or REPORTED_METRICS.get(metric, "min"), resources,
                     base.training.max_steps or 0, Path.cwd())
    problems = _check_metric(plan) + _check_scheduler(plan) + _check_search(plan)
    problems += _check_values(plan, dims)
    if problems:
        raise ConfigError(problems)
    return plan


def _check_metric(plan: SweepPlan) -> list[str]:
    metric = plan.metric
    if metric not in REPORTED_METRICS:
        return [f"metric '{metric}': the engine never reports it{did_you_mean(metric, list(REPORTED_METRICS))}; "
                f"it reports {', '.join(REPORTED_METRICS)}"]
    if plan.spec.mode and plan.spec.mode != REPORTED_METRICS[metric]:
        return [f"mode '{plan.spec.mode}' with metric '{metric}' would pick the worst trial; "
                f"use mode '{REPORTED_METRICS[metric]}'"]
    return []


def _check_scheduler(plan: SweepPlan) -> list[str]:
    sched, t = plan.spec.scheduler, plan.base.training
    if sched.name == "fifo":
        return []
    problems = []
    if not t.max_steps:
        problems.append(f"scheduler {sched.name}: budgets are in steps, so the base needs "
                        "training.max_steps (it trains by epochs)")
    every = t.eval_every_n_steps if plan.metric.startswith("val_") else t.log_every_n_steps
    what = "training.eval_every_n_steps" if plan.metric.startswith("val_") else "training.log_every_n_steps"
    if every == 0:
        return problems + [f"scheduler {sched.name} compares trials while they run, but {what} is 0 "
                           f"(only at the end); set it, e.g. --set {what}=25"]
    step = (sched.grace_steps or every) if isinstance(sched, AshaConfig) else sched.interval_steps
    field = "grace_steps" if isinstance(sched, AshaConfig) else "interval_steps"
    if step % every:
        problems.append(f"scheduler.{field} {step} is not a multiple of {what} {every}: trials "
                        "would be compared at steps they never report")
    if isinstance(sched, AshaConfig) and t.max_steps and (sched.max_steps or t.max_steps) > t.max_steps:
        problems.append(f"scheduler.max_steps {sched.max_steps} is past training.max_steps {t.max_steps}")
    return problems


def _check_search(plan: SweepPlan) -> list[str]:
    s, kinds = plan.spec, {d.kind for d in plan.spec.space.values()}
    if s.search.name == "grid" and kinds - {"grid", "choice"}:
        return ["search grid: every space dimension must be `grid` (or `choice`); use search "
                "random or optuna for ranges"]
    if s.search.name == "optuna" and "grid" in kinds:
        return ["search optuna: `grid` dimensions are not supported; use `choice` (or search grid)"]
    if s.scheduler.name == "pbt" and s.search.name == "grid":
        return ["scheduler pbt: use search random (PBT mutates the trials' values itself)"]
    return []


def _check_values(plan: SweepPlan, dims: dict[str, Domain]) -> list[str]:
    """Validate the base with every probe value of every dim (others at the first probe)."""
    problems: list[str] = []
    first = {p: d.probes()[0] for p, d in dims.items()}
    for path, domain in dims.items():
        for value in domain.probes():
            try:
                plan.trial_config({**first, path: value}, "probe")
            except ConfigError as err:
                problems += [f"space.{path} = {value!r}: {p}" for p in err.problems]
                break
    return list(dict.fromkeys(problems))
