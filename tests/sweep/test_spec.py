"""Sweep files are validated before any trial starts: each bad file exits 2 naming the field."""

from __future__ import annotations

import pytest
import yaml

from tengine.cli import main
from tests.conftest import REPO

GOOD = {
    "name": "s", "base": str(REPO / "configs/quickstart.yaml"),
    "overrides": ["training.max_steps=40", "training.eval_every_n_steps=10"],
    "space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}},
    "scheduler": {"name": "asha", "grace_steps": 10},
    "resources": {"workers": 0},
}


def _write(tmp_path, **changes) -> str:
    spec = {**GOOD, "root": str(tmp_path / "sweeps"), **changes}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize("changes, expected", [
    ({"space": {"optim.lrr": {"uniform": [0.1, 0.2]}}}, ["space.optim.lrr", "did you mean 'optim.lr'"]),
    ({"space": {"optim.lr": {"loguniform": [0.0, 1e-2]}}}, ["space.optim.lr", "loguniform", "> 0"]),
    ({"space": {"model.size": {"choice": []}}}, ["space.model.size", "choice is empty"]),
    ({"metric": "val_los"}, ["metric 'val_los'", "never reports", "did you mean 'val_loss'"]),
    ({"space": {"optim.lr": {"uniform": [1e-3, 20.0]}}}, ["space.optim.lr = 20.0", "optim.lr"]),
    ({"space": {"training.micro_batch_size": {"grid": [8, 0]}}}, ["space.training.micro_batch_size = 0"]),
    ({"scheduler": {"name": "asha", "grace_steps": 15}}, ["scheduler.grace_steps 15", "multiple"]),
    ({"scheduler": {"name": "hyperband"}}, ["scheduler"]),
    ({"mode": "max"}, ["mode 'max'", "use mode 'min'"]),
    ({"search": {"name": "grid"}}, ["search grid"]),
])
def test_bad_sweep_files_exit_2_before_any_trial_naming_the_field(tmp_path, capsys, changes, expected):
    code = main(["sweep", _write(tmp_path, **changes)])
    err = capsys.readouterr().err
    assert code == 2, err
    for text in expected:
        assert text in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "sweeps").exists()  # nothing started, nothing written


def test_dry_run_shows_trials_and_the_resource_plan_and_runs_nothing(tmp_path, capsys):
    grid = _write(tmp_path, space={"optim.lr": {"grid": [1e-3, 3e-3]}, "model.size": {"choice": ["tiny"]}},
                  search={"name": "grid"}, num_samples=2, scheduler={"name": "fifo"},
                  resources={"workers": 0, "cpus_per_worker": 0.5})
    assert main(["sweep", grid, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 trials" in out and "grid: 2 points × 2 samples" in out
    assert "optim.lr: grid [0.001, 0.003]" in out
    assert "reserving {'CPU': 0.5, 'GPU': 0.0}" in out and "at a time" in out
    assert not (tmp_path / "sweeps").exists()


def test_optuna_with_a_fixed_seed_proposes_the_same_sequence_twice(tmp_path):
    from tengine.cluster.tune_schedulers import build_searcher, param_space
    from tengine.sweep import load_sweep

    def proposals(seed: int) -> list[dict]:
        plan = load_sweep(_write(tmp_path, search={"name": "optuna", "seed": seed},
                                 space={"optim.lr": {"loguniform": [1e-4, 1e-2]},
                                        "training.micro_batch_size": {"choice": [8, 16]},
                                        "model.dropout": {"uniform": [0.0, 0.3]}}))
        searcher = build_searcher(plan, concurrency=1)
        assert searcher.set_search_properties(plan.metric, plan.mode, param_space(plan))
        out = []
        for i in range(14):  # past TPE's 10 random start-up trials: the model-based ones too
            config = searcher.suggest(f"t{i}")
            out.append(config)
            searcher.on_trial_complete(f"t{i}", {"val_loss": abs(config["optim.lr"] - 3e-3)
                                                 + config["model.dropout"]})
        return out

    first, second = proposals(7), proposals(7)
    assert first == second
    assert proposals(8) != first  # the seed is what makes them equal
