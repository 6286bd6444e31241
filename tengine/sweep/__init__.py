"""Sweeps: the sweep file (`spec`), the report read from a sweep dir (`report`), and
`run_grid_sweep`, the seed's grid API, kept as a thin layer over the same machinery.

    from tengine.sweep import run_grid_sweep
    rows = run_grid_sweep("configs/quickstart.yaml", {"optim.lr": [1e-3, 3e-3]},
                          overrides=["training.max_steps=100", "distributed.workers=0"])

The trial runner itself (Ray Tune) lives in `tengine.cluster.tune`; this package imports no Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tengine.sweep.spec import SweepConfig, SweepPlan, load_sweep, plan_sweep


def run_grid_sweep(base_config: str | Path | dict | Any, grid: dict[str, list],
                   run_fn: Callable[[Any], dict] | None = None, *, name: str = "grid",
                   root: str = "runs/sweeps", overrides: list[str] | None = None,
                   address: str | None = None, max_concurrent: int | None = None) -> list[dict]:
    """Run every combination of `grid` (dotted config path → values) once, as a `tengine sweep`
    with grid search and no scheduler. `base_config` is a config path, a mapping or a
    TengineConfig; `run_fn(cfg)` replaces `engine.run` for each trial (it must be picklable and
    return the run's summary). Returns one row per trial: params, best/last metric, status."""
    from tengine.cluster.tune import run_sweep

    if isinstance(base_config, (str, Path)):
        source = Path(base_config).resolve()
        base, data = str(source), None
    else:
        data = base_config if isinstance(base_config, dict) else base_config.model_dump(mode="json")
        base, source = "(in memory)", Path.cwd() / "grid.yaml"
    spec = SweepConfig(name=name, base=base, overrides=overrides or [], root=root, num_samples=1,
                       space={path: {"grid": list(values)} for path, values in grid.items()},
                       search={"name": "grid"}, max_concurrent=max_concurrent,
                       resources={"workers": 0})
    plan = plan_sweep(spec, source, base_data=data)
    plan.run_fn = run_fn
    return run_sweep(plan, address)["trials"]


__all__ = ["SweepConfig", "SweepPlan", "load_sweep", "plan_sweep", "run_grid_sweep"]
