"""The core install (`pip install tengine`, no extras) trains; asking it for what an extra
provides fails before any work, naming the extra.

Runs in a venv where only the wheel's core dependencies are importable (tests/packaging/conftest.py):
Ray, DeepSpeed, Accelerate, transformers, tokenizers, W&B, Optuna, ONNX and croniter are absent,
and tengine is the wheel's, not the repository's.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import REPO, TINY, read_jsonl
from tests.packaging.conftest import OPTIONAL, clean_env

QUICKSTART = str(REPO / "configs/quickstart.yaml")


def _run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], cwd=cwd, env=clean_env(cwd), capture_output=True,
                          text=True, timeout=300)


def test_the_core_install_sees_no_optional_package_and_the_wheels_tengine(core_python, tmp_path):
    probe = ("import importlib.util, json, tengine; print(json.dumps({'tengine': tengine.__file__, "
             f"'found': [m for m in {OPTIONAL!r} if importlib.util.find_spec(m)]}}))")
    proc = _run(core_python, "-c", probe, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["found"] == []
    assert Path(seen["tengine"]).is_relative_to(core_python.parents[1])  # not the editable one


def test_the_core_install_trains_the_quickstart_in_this_process(core_python, tmp_path):
    # bytes of the stdlib: the loss drops fast (the Markov source needs hundreds of steps)
    sets = [*TINY, "data.source=text_files", "data.max_bytes=200000", "training.max_steps=40",
            "checkpoint.every_n_steps=20"]
    proc = _run(core_python, "-m", "tengine", "train", QUICKSTART, "--run-dir", str(tmp_path / "run"),
                *[a for s in sets for a in ("--set", s)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert (summary["status"], summary["steps"], summary["backend"]) == ("completed", 40, "single")
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run/metrics.jsonl")]
    assert len(losses) == 40 and losses[-1] < losses[0] - 1.0  # from ~log(256) down fast
    assert (tmp_path / "run/checkpoints/step_00000040/manifest.json").is_file()


# Each case: the command, its own --set/flags (after the tiny ones, so they win), the exit code and
# the text its output must contain. One process runs them all (one torch import). The failures
# but `bpe` (found when the data is built) are found in preflight, before a run directory exists.
CASES = {
    "deepspeed": (["train", QUICKSTART], ["--set", "distributed.backend=deepspeed",
                                          "--set", "distributed.zero_stage=2"], 2,
                  "distributed.backend 'deepspeed' needs the 'deepspeed' package, which is not "
                  "installed; install it with: pip install 'tengine[deepspeed]'"),
    "ddp": (["config", "validate", QUICKSTART], ["--set", "distributed.backend=ddp"], 2,
            "distributed.backend 'ddp' needs the 'accelerate' package, which is not installed; "
            "install it with: pip install 'tengine[ray]'"),
    "workers": (["train", QUICKSTART], ["--workers", "2", "--set", "distributed.backend=ddp"], 2,
                "distributed.workers 2 (Ray Train workers) needs the 'ray' package, which is not "
                "installed; install it with: pip install 'tengine[ray]' (or train in this "
                "process: --workers 0 --set distributed.backend=single)"),
    "bpe": (["train", QUICKSTART], ["--set", "data.tokenizer=bpe", "--set", "data.source=text_files"],
            2, "data.tokenizer 'bpe' needs the 'tokenizers' package, which is not installed; "
            "install it with: pip install 'tengine[hf]'"),
    "hf model": (["config", "validate", QUICKSTART], ["--set", "model.name=hf", "--set",
                 'model.hf={"config": {"model_type": "gpt2"}}'], 2,
                 "model.name 'hf' needs the 'transformers' package, which is not installed; "
                 "install it with: pip install 'tengine[hf]'"),
    "sweep": (["sweep", str(REPO / "configs/sweeps/quickstart_lr.yaml")], None, 2,
              "tengine sweep (Ray Tune) needs the 'ray' package, which is not installed; install "
              "it with: pip install 'tengine[ray]'"),
    # the job queue needs no extra (in this process, SQLite); a cron schedule needs croniter
    "jobs": (["jobs", "submit", QUICKSTART, "--json"], None, 0, '"state": "PENDING"'),
    "cron": (["schedule", "add", "nightly", "--config", QUICKSTART, "--cron", "0 3 * * 1"], None,
             2, "a cron schedule needs the 'croniter' package, which is not installed; install it "
             "with: pip install 'tengine[ray]'"),
}

RUN_CASES = """
import contextlib, io, json, sys
from tengine.cli import main
out = {}
for name, argv in json.loads(sys.argv[1]).items():
    text = io.StringIO()
    with contextlib.redirect_stderr(text), contextlib.redirect_stdout(text):
        code = main(argv)
    out[name] = [code, text.getvalue()]
print(json.dumps(out))
"""


def test_what_needs_an_extra_stops_before_any_work_naming_it(core_python, tmp_path):
    tiny = [a for s in TINY for a in ("--set", s)]
    store = ["--store", f"sqlite:///{tmp_path / 'control.db'}"]
    argv = {}
    for name, (command, own, _, _) in CASES.items():
        root = tmp_path / "runs" / name
        if command[0] == "sweep":  # a sweep file has its own keys: only its root is set
            argv[name] = [*command, "--set", f"root={root}"]
        elif command[0] in ("jobs", "schedule"):
            argv[name] = [*command, *store]
        else:
            argv[name] = [*command, *tiny, "--set", f"logging.root={root}", *own]
    proc = _run(core_python, "-c", RUN_CASES, json.dumps(argv), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    for name, (_, _, want_code, text) in CASES.items():
        code, out = results[name]
        assert (code, text in out) == (want_code, True), (name, out)
        assert "Traceback" not in out, (name, out)
        if want_code == 2:
            assert out.startswith("tengine: error: "), (name, out)
        if want_code == 2 and name != "bpe":
            assert not (tmp_path / "runs" / name).exists(), name
