"""Safety of control-plane jobs: import paths only under the allowed prefixes (at submit, and in
the job's own process), and no secret in a job's log or a run's env.json."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tengine import connect
from tengine.config import load_config
from tengine.control.executors import JobContext, JobFailed, run_train
from tengine.control.runner import JobRunner
from tengine.control.safety import (
    ALLOWED_IMPORTS_ENV,
    DEFAULT_ALLOWED,
    allowed_imports,
    check_job_imports,
    config_imports,
    redact,
    redact_env,
)
from tengine.errors import ConfigError, Invalid
from tengine.redact import redact_argv
from tengine.registry import import_path
from tests.conftest import REPO, TINY
from tests.control.loud_model import PRINTED


def _cfg(tmp_path, *sets: str) -> dict:
    return load_config(REPO / "configs/quickstart.yaml",
                       [*TINY, f"logging.root={tmp_path}/runs", *sets]).model_dump(mode="json")


def test_allowed_prefixes_are_normalised_and_match_at_dots():
    assert allowed_imports() == DEFAULT_ALLOWED == ("tengine.",)
    assert allowed_imports([" mypkg ", "mypkg.", "a.b,c", ""]) == ("tengine.", "mypkg.", "a.b.", "c.")
    job = lambda module: {"config": {"model": {"name": f"{module}:factory"}}}  # noqa: E731
    check_job_imports("train", job("mypkg"), allowed_imports(["mypkg"]))
    check_job_imports("train", job("mypkg.models.gpt"), allowed_imports(["mypkg"]))
    with pytest.raises(Invalid, match="module 'mypkg2' is not allowed"):
        check_job_imports("train", job("mypkg2"), allowed_imports(["mypkg"]))


def test_every_import_path_of_a_config_is_found_and_refused_naming_field_module_and_setting(tmp_path):
    assert config_imports(_cfg(tmp_path)) == []  # built-in names only
    cfg = _cfg(tmp_path, "model.name=tests.engine.helpers:slow_gpt",
               "data.source=tests.data.user_data:pair", "task.loss=os.path:LossLike")
    assert config_imports(cfg) == [("model.name", "tests.engine.helpers"),
                                   ("task.loss", "os.path"), ("data.source", "tests.data.user_data")]
    for job_type in ("train", "retrain", "evaluate"):
        with pytest.raises(Invalid) as err:
            check_job_imports(job_type, {"config": cfg}, allowed_imports(["tests"]))
        assert str(err.value).splitlines() == [  # one line per problem: only os.path is outside
            f"task.loss: module 'os.path' is not allowed in {job_type} jobs on this control plane "
            "(allowed: tengine.*, tests.*); an operator allows it with control.allowed_imports: "
            "`tengine control start --allow-import os` or `tengine jobs work --allow-import os`"]
    with pytest.raises(Invalid, match="model.name: module 'tests.engine.helpers'"):
        check_job_imports("train", {"config": cfg}, allowed_imports())
    check_job_imports("sweep", {"sweep_file": "/abs/lr.yaml"}, allowed_imports())  # checked where it runs


def test_with_the_variable_set_import_path_refuses_before_importing(tmp_path, monkeypatch):
    (tmp_path / "evil_module.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\ndef factory(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(ALLOWED_IMPORTS_ENV, "tengine.,tests.")
    with pytest.raises(ConfigError) as err:
        import_path("evil_module:factory", "data.source")
    assert not (tmp_path / "imported").exists()  # its code never ran
    assert str(err.value).startswith(
        f"data.source: module 'evil_module' is not allowed in this job ({ALLOWED_IMPORTS_ENV})")
    assert "control.allowed_imports" in str(err.value) and "--allow-import evil_module" in str(err.value)
    assert import_path("tests.engine.helpers:slow_gpt", "model.name").__name__ == "slow_gpt"
    monkeypatch.delenv(ALLOWED_IMPORTS_ENV)
    assert import_path("evil_module:factory", "data.source").__name__ == "factory"


@pytest.mark.parametrize("line, shown", [
    ("WANDB_API_KEY=abc123", "WANDB_API_KEY=***"),
    ("--hf-token xyz --hf-token=xyz", "--hf-token *** --hf-token=***"),
    ('{"api_key": "s3cr3t", "loss": 0.5}', '{"api_key": "***", "loss": 0.5}'),
    ("password: hunter2, user: me", "password: ***, user: me"),
    ("export AWS_SECRET_ACCESS_KEY='a/b+c'", "export AWS_SECRET_ACCESS_KEY='***'"),
    ("pip install --index-url https://me:pw123@pypi.example/simple", "pip install --index-url https://me:***@pypi.example/simple"),
    ("Authorization: Bearer abc.def", "Authorization: ***"),
    ("--set data.hf_token=abc --address 10.0.0.5:6379", "--set data.hf_token=*** --address 10.0.0.5:6379"),
    # data, not secrets: names that only start with or count the words
    ("step 3 tokens_per_s=1234 num_tokens=5 key_padding_mask=True", None),
    ("RAY_AUTH_MODE=token monkey=1 --token --other", None),
])
def test_redact_hides_secret_looking_values_only(line, shown):
    assert redact(line) == (line if shown is None else shown)


def test_redact_env_and_argv_mask_secret_names():
    assert redact_env({"HF_TOKEN": "hf_x", "OMP_NUM_THREADS": "2", "DB_PASSWORD": "pw"}) == {
        "HF_TOKEN": "***", "OMP_NUM_THREADS": "2", "DB_PASSWORD": "***"}
    assert redact_argv(["tengine", "train", "--hf-token", "xyz", "--api-key=k", "--run-dir", "r"]) == [
        "tengine", "train", "--hf-token", "***", "--api-key=***", "--run-dir", "r"]


def test_a_jobs_child_keeps_secrets_out_of_its_log_and_env_json(tmp_path, monkeypatch):
    """A train job whose model prints WANDB_API_KEY=… and --hf-token …, run by a runner whose
    environment holds a secret: neither printed value reaches `client.jobs.logs` or `tengine jobs
    logs`, and env.json lists the variable with its value masked."""
    monkeypatch.setenv("WANDB_API_KEY", "envsecret4242")
    store = f"sqlite:///{tmp_path}/c.db"
    client = connect(store_uri=store, allowed_imports=("tests",))  # jobs may import test code
    cfg = _cfg(tmp_path, "training.max_steps=2", "model.name=tests.control.loud_model:loud_gpt")
    job = client.jobs.submit("train", {"config": cfg})
    assert JobRunner(client, "r", heartbeat_s=0.2, allowed_imports=("tests",)).run_one()
    done = client.jobs.get(job.id)
    logs = "\n".join(client.jobs.logs(job.id))
    assert done.state == "SUCCEEDED", (done.error, logs[-3000:])
    assert "WANDB_API_KEY=***" in logs and "--hf-token ***" in logs
    cli = subprocess.run([sys.executable, "-m", "tengine", "jobs", "logs", job.id, "--store", store],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and "WANDB_API_KEY=***" in cli.stdout, cli.stderr
    for secret in (*PRINTED, "envsecret4242"):
        assert secret not in logs and secret not in cli.stdout
    env_json = (tmp_path / "runs" / f"quickstart-{job.id}" / "env.json").read_text()
    assert "envsecret4242" not in env_json
    environment = json.loads(env_json)["environment"]
    assert environment["WANDB_API_KEY"] == "***"
    assert environment[ALLOWED_IMPORTS_ENV] == "tengine.,tests."  # what the child was allowed


def test_the_jobs_own_process_refuses_an_import_outside_the_runners_prefixes(tmp_path, monkeypatch):
    """The second line of defence, without the submit check: the child `tengine train` of a job
    the runner holds fails at preflight, naming the field, the module and the setting."""
    monkeypatch.delenv(ALLOWED_IMPORTS_ENV, raising=False)
    lines: list[str] = []
    log = lambda *logged: lines.extend(logged)  # noqa: E731
    job = SimpleNamespace(id="j1", type="train", resources={}, config={
        "config": _cfg(tmp_path, "model.name=tests.engine.helpers:slow_gpt")})
    with pytest.raises(JobFailed) as err:
        run_train(JobContext(job, client=None, log=log))
    assert "exited with code 2" in str(err.value)
    assert ("model.name: module 'tests.engine.helpers' is not allowed in this job "
            f"({ALLOWED_IMPORTS_ENV}) (allowed: tengine.*)") in str(err.value)
    assert "--allow-import tests" in "\n".join(lines)
    # the same job on a runner that allows `tests` (JobContext.allowed_imports): it trains
    job.config["config"] = _cfg(tmp_path, "model.name=tests.engine.helpers:slow_gpt",
                                "training.max_steps=2")
    result = run_train(JobContext(job, client=None, log=log, allowed_imports=("tests",)))
    assert result["summary"]["status"] == "completed"
