"""The environment snapshot: read without a process, secrets never written, REPRODUCE.md,
`tengine env diff`, and the git dirty flag read from .git itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tengine.config import load_config
from tengine.engine import run
from tengine.gitinfo import git_info
from tests.conftest import REPO, TINY

SECRETS = {"WANDB_API_KEY": "wb-secret-value-8317", "HF_TOKEN": "hf_secretvalue5521",
           "MY_SERVICE_SECRET": "svc-secret-value-9044"}


def test_secrets_in_the_environment_appear_in_no_file_of_the_run(tmp_path, monkeypatch):
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    cfg = load_config(REPO / "configs/quickstart.yaml", [
        *TINY, f"logging.root={tmp_path}", "name=s", "training.max_steps=6",
        "checkpoint.every_n_steps=6", "logging.trackers=[jsonl,db,tensorboard,wandb]",
        "logging.wandb.mode=offline"])  # WANDB_API_KEY would make `auto` online
    run_dir = Path(run(cfg)["run_dir"])
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files) and (run_dir / "env.json").is_file()
    db_files = list((tmp_path / "control").glob("tengine.db*"))  # the experiment DB (+ WAL)
    assert db_files
    for p in files + db_files:  # env.json, REPRODUCE.md, metrics, checkpoints, W&B's files, DB
        data = p.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in data, f"{name}'s value is in {p}"
    from tengine.control import open_store
    from tengine.control.experiments import ExperimentDB

    store = open_store(f"sqlite:///{tmp_path}/control/tengine.db")
    recorded = ExperimentDB(store).get_run("s")  # the env it keeps is env.json's, masked
    assert recorded.env["environment"]["HF_TOKEN"] == "***" and recorded.status == "completed"
    store.close()
    env = json.loads((run_dir / "env.json").read_text())
    assert env["environment"]["WANDB_API_KEY"] == "***" and env["environment"]["HF_TOKEN"] == "***"
    assert "MY_SERVICE_SECRET" not in env["environment"]  # not a variable runs depend on
    assert env["distributions"]["torch"].startswith("2.13") and env["git"]["commit"]
    text = (run_dir / "REPRODUCE.md").read_text()
    assert "tengine train config.yaml --run-dir NEW_RUN_DIR --resume never" in text
    assert env["git"]["commit"] in text


def test_env_diff_names_what_differs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    base = {"python": "3.11.7", "platform": "Linux", "cuda": None, "devices": ["cpu"],
            "cpu_count": 2, "git": {"commit": "ab" * 20, "branch": "main", "dirty": False},
            "distributions": {"torch": "2.13.0", "numpy": "2.4.6", "tqdm": "4.70.1"},
            "environment": {"OMP_NUM_THREADS": "2"}}
    other = {**base, "git": {**base["git"], "dirty": True},
             "distributions": {"torch": "2.13.0", "numpy": "2.5.0", "rich": "14.0"},
             "environment": {}}
    for d, e in ((a, base), (b, other)):
        d.mkdir()
        (d / "env.json").write_text(json.dumps(e))
    cmd = [sys.executable, "-m", "tengine", "env", "diff", str(a), str(b)]
    out = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    diff = json.loads(out.stdout)
    assert diff["fields"] == {} and diff["git"] == {"dirty": [False, True]}
    assert diff["distributions"] == {"changed": {"numpy": ["2.4.6", "2.5.0"]},
                                     "only_a": {"tqdm": "4.70.1"}, "only_b": {"rich": "14.0"}}
    assert diff["environment"] == {"changed": {}, "only_a": {"OMP_NUM_THREADS": "2"}, "only_b": {}}
    table = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    assert "distribution numpy" in table and "2.5.0" in table and "git dirty" in table
    missing = subprocess.run([*cmd[:-1], str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "has no env.json" in missing.stderr


def test_the_git_dirty_flag_is_read_from_the_repository_itself(tmp_path):
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    repo = tmp_path / "repo"
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    (repo / "a.txt").write_text("a\n")
    (repo / "sub").mkdir()
    (repo / "sub" / "b.txt").write_text("b\n")
    os.symlink("a.txt", repo / "link")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True).stdout.strip()
    branch = subprocess.run(["git", "branch", "--show-current"], cwd=repo, capture_output=True,
                            text=True).stdout.strip()
    assert git_info(repo / "sub") == {"commit": head, "branch": branch, "dirty": False,
                                      "staged": False}
    os.utime(repo / "a.txt", (1, 1))  # touched, same content: clean
    (repo / "untracked.txt").write_text("u")  # untracked files do not count
    assert git_info(repo)["dirty"] is False
    (repo / "a.txt").write_text("c\n")  # same size, other content
    assert git_info(repo)["dirty"] is True
    subprocess.run(["git", "add", "a.txt"], cwd=repo, check=True)
    assert git_info(repo)["dirty"] is False and git_info(repo)["staged"] is True  # staged
    subprocess.run(["git", "reset", "-q", "--hard"], cwd=repo, check=True)
    assert git_info(repo)["dirty"] is False and git_info(repo)["staged"] is False
    (repo / "sub" / "b.txt").unlink()
    assert git_info(repo)["dirty"] is True
    subprocess.run(["git", "checkout", "-q", "sub/b.txt"], cwd=repo, check=True)
    (repo / "sub" / "ünïcödé naïve.txt").write_text("x\n")  # a path of multi-byte characters
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "y"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True).stdout.strip()
    assert git_info(repo) == {"commit": head, "branch": branch, "dirty": False, "staged": False}
    subprocess.run(["git", "pack-refs", "--all"], cwd=repo, check=True)
    assert git_info(repo)["commit"] == head  # a packed ref
    assert git_info(tmp_path) is None
