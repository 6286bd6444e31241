"""`data.source: package.module:factory`: a user's own data through the CLI and the engine."""

from __future__ import annotations

import json

import pytest

from tengine.cli import main
from tengine.config.schema import DataConfig, TaskConfig
from tengine.data import build_data
from tengine.errors import DataError
from tests.conftest import REPO, TINY


def _sets(*args: str) -> list[str]:
    return [x for a in args for x in ("--set", a)]


def test_a_factory_returning_train_and_val_trains_from_the_cli(tmp_path):
    run_dir = tmp_path / "run"
    code = main(["train", str(REPO / "configs/quickstart.yaml"), "--run-dir", str(run_dir),
                 *_sets(*TINY, "data.source=tests.data.user_data:pair", "model.vocab_size=16",
                        "training.max_steps=8")])
    assert code == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 8


def test_a_factory_gets_the_arguments_it_names_and_may_return_a_bundle():
    data = DataConfig(source="tests.data.user_data:bundle", seq_len=24)
    bundle = build_data(data, TaskConfig())
    assert bundle.vocab_size == 16 and bundle.info == {"task": "language_modeling"}
    assert bundle.train[0]["input_ids"].shape == (24,)


@pytest.mark.parametrize(("name", "message"), [
    ("wrong", "returned list; return a tengine.data.DataBundle or a \\(train, val\\) tuple"),
    ("tuples", "the train dataset of .* yields tuple items; items must be dicts"),
    ("needs_foo", "needs foo, which tengine does not pass; it passes .* data, task, seq_len"),
])
def test_a_factory_that_returns_the_wrong_thing_is_a_clear_error(name, message):
    with pytest.raises(DataError, match=f"data.source: .*{message}"):
        build_data(DataConfig(source=f"tests.data.user_data:{name}"), TaskConfig())


def test_a_misspelt_factory_fails_in_preflight(capsys):
    for source, said in (("tests.data.user_dta:pair", "cannot import module 'tests.data.user_dta'"),
                         ("tests.data.user_data:pairs", "has no attribute 'pairs'")):
        assert main(["config", "validate", str(REPO / "configs/quickstart.yaml"),
                     *_sets(f"data.source={source}")]) == 2
        err = capsys.readouterr().err
        assert f"data.source: {said}" in err or (said in err and "data.source" in err), err
        assert "Traceback" not in err
