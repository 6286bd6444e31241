"""Job executors: what a runner does with a job it holds, looked up by job type.

    result = EXECUTORS.get(job.type)(ctx)      # ctx: JobContext; result: the job's result dict

An executor gets a `JobContext` (the job, a log function, a cancel event, the control client for
registry calls, the Ray address the runner lives on) and returns the job's result. Once
`ctx.cancelled` is set it must stop its work and raise `Cancelled`.

`train` and `retrain` run `python -m tengine train` as a child process (with `--address` on a
cluster: the Ray Train driver of `tengine/cluster/train.py`), so a crash in training cannot take
the runner down, and cancel kills the child's whole process group: with its driver gone, Ray
stops the training workers. The child also dies with the runner thread that started it
(Linux `PR_SET_PDEATHSIG`), so a dead runner leaves no training behind that a retry could race.
`evaluate` runs `python -m tengine evaluate` the same way on a registered model version (or a
checkpoint path). `sweep` runs `python -m tengine sweep` on the job's sweep file (resuming its
own sweep dir when retried) and returns the best trial. `export` runs `python -m tengine export`
on a registered version's artifact and attaches the bundle to that version. A `retrain` with
`promote` ({alias, metric, mode, margin}) then evaluates the new version and the alias's on the
same held-out data and moves the alias only if the new one is better (the decision is recorded
either way: `tengine registry promotions NAME`).

The child runs with TENGINE_ALLOWED_IMPORTS set to the job's allowed import prefixes (the
runner's `allowed_imports`, else the defaults plus what the runner's own environment allows),
so it imports no user module outside them (`safety.py`), and every line of its output goes
through `redact` before it reaches the job log: a child that prints `HF_TOKEN=…` leaves `***`.
`sleep` (sleep, append to a file, maybe fail) is for tests only: it exists only while
TENGINE_TEST_EXECUTORS=1 is set in the runner's process, since it writes to any path a
submitter names.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tengine.control.artifacts import attach_bundle, register_checkpoint, use_version
from tengine.control.jobs import Job
from tengine.control.safety import ALLOWED_IMPORTS_ENV, allowed_imports, redact
from tengine.errors import PREEMPTED_EXIT_CODE, NotFound, TengineError
from tengine.files import config_hash
from tengine.registry import Registry, env_allowed_imports

TEST_EXECUTORS_ENV = "TENGINE_TEST_EXECUTORS"


class Cancelled(Exception):
    """The job's lease is gone (cancelled, or expired): its work was stopped."""


class Preempted(Exception):
    """The work stopped resumably (`tengine train` exited 75: SIGTERM or training.max_time,
    with a checkpoint): the job goes back to the queue, and its next attempt resumes."""


class JobFailed(TengineError):
    """The job's work failed; the message is what `tengine jobs show` prints as its error."""


@dataclass
class JobContext:
    job: Job
    client: Any  # tengine.cluster.client.ControlClient: registry calls from executors
    log: Callable[..., None]  # log(*lines): kept with the job, read by `tengine jobs logs`
    address: str | None = None  # the Ray cluster the runner lives on; None = no Ray
    cancelled: threading.Event = field(default_factory=threading.Event)
    # module prefixes the job's process may import (safety.allowed_imports); None = the
    # defaults plus TENGINE_ALLOWED_IMPORTS of the runner's own environment
    allowed_imports: tuple[str, ...] | None = None

    def child_allowed_imports(self) -> tuple[str, ...]:
        if self.allowed_imports is not None:
            return allowed_imports(self.allowed_imports)
        return allowed_imports(env_allowed_imports() or ())


Executor = Callable[[JobContext], dict[str, Any]]


class ExecutorRegistry(Registry[Executor]):
    """Executors by job type; `register_test_only` ones are seen only while
    TENGINE_TEST_EXECUTORS=1, read at each lookup (so a runner in a Ray actor, or a `tengine
    jobs work` that a test started, has them when its environment has the variable)."""

    def __init__(self):
        super().__init__("job executor", "job.type")
        self.test_only: dict[str, Executor] = {}

    def register_test_only(self, name: str) -> Callable[[Executor], Executor]:
        def add(fn: Executor) -> Executor:
            self.test_only[name] = fn
            return fn

        return add

    def visible(self) -> dict[str, Executor]:
        if os.environ.get(TEST_EXECUTORS_ENV) == "1":
            return {**self._items, **self.test_only}
        return self._items


EXECUTORS = ExecutorRegistry()


@EXECUTORS.register_test_only("sleep")
def run_sleep(ctx: JobContext) -> dict[str, Any]:
    """For tests of the dispatcher (only with TENGINE_TEST_EXECUTORS=1): sleep, then append the
    job id to `append_to` (a side effect a test can count), then fail if `fail` says so."""
    seconds = float(ctx.job.config.get("seconds", 0))
    if ctx.cancelled.wait(seconds):
        raise Cancelled
    if path := ctx.job.config.get("append_to"):
        with open(path, "a") as fh:
            fh.write(ctx.job.id + "\n")
    if message := ctx.job.config.get("fail"):
        raise JobFailed(str(message))
    return {"slept_s": seconds}


@EXECUTORS.register("train")
def run_train(ctx: JobContext) -> dict[str, Any]:
    cfg = ctx.job.config.get("config")
    if not isinstance(cfg, dict):
        raise JobFailed("the job has no resolved config; submit it with `tengine jobs submit "
                        "CONFIG.yaml` (or pass config={'config': cfg.model_dump(mode='json')})")
    run_dir = Path(ctx.job.config.get("run_dir")
                   or Path(cfg["logging"]["root"]) / f"{cfg['name']}-{ctx.job.id}")
    name, parent = ctx.job.config.get("register"), None
    if ctx.job.type == "retrain" and name:  # the parent: what the model is now, before training
        parent = _current_version(ctx, name, ctx.job.config.get("parent_alias", "production"))
        if ctx.job.config.get("init_from_parent") and parent is not None:
            artifact = use_version(ctx.client.registry.get(name, parent))  # sha256 checked
            cfg = {**cfg, "model": {**cfg["model"], "init_from": str(artifact)}}
            ctx.log(f"warm start from {name} v{parent} ({artifact})")
    with tempfile.TemporaryDirectory(prefix="tengine-job-") as tmp:
        _run_child(ctx, _train_command(ctx, _config_file(tmp, cfg), run_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    keep = ("status", "steps", "train_loss", "val_loss", "best_val_loss", "tokens_per_s",
            "restarts", "world_size", "best_checkpoint", "last_checkpoint", "resumed_from")
    result: dict[str, Any] = {"run_dir": str(run_dir), "summary": {k: summary.get(k) for k in keep}}
    if name:
        result["model"] = _register(ctx, name, cfg, summary, run_dir, parent)
        promote = ctx.job.config.get("promote")
        if ctx.job.type == "retrain" and promote is not None:
            result["promotion"] = _promote(ctx, name, result["model"]["version"], cfg, promote)
    return result


def _promote(ctx: JobContext, name: str, candidate: int, cfg: dict,
             promote: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the new version and the one `promote.alias` (default production) points at on
    the same held-out data (this job's config: the new data), each on the whole validation
    split, and move the alias only if the new one is better by `margin` (promotion.py)."""
    alias = promote.get("alias", ctx.job.config.get("parent_alias", "production"))
    metric, mode = promote.get("metric", "val_loss"), promote.get("mode", "min")
    try:
        baseline = ctx.client.registry.get(name, alias).version
    except NotFound:
        baseline = None
    exact = {**cfg, "training": {**cfg.get("training", {}), "eval_batches": None}}
    values = {}
    with tempfile.TemporaryDirectory(prefix="tengine-job-") as tmp:
        cfg_file = _config_file(tmp, exact)
        for version in (candidate, baseline):
            if version is None:
                continue
            artifact = use_version(ctx.client.registry.get(name, version))  # sha256 checked
            record = _evaluate_child(ctx, cfg_file, artifact, Path(tmp) / f"v{version}.json")
            values[version] = record.get(metric)
            ctx.log(f"promotion: {name} v{version} {metric} {values[version]}")
    decision = ctx.client.registry.promote_if_better(
        name, candidate, metric=metric, mode=mode, margin=float(promote.get("margin", 0.0)),
        candidate_value=values[candidate], baseline_version=baseline,
        baseline_value=values.get(baseline), alias=alias, job_id=ctx.job.id)
    ctx.log(f"promotion: {decision['decision']} — {decision['reason']}")
    return decision


def _evaluate_child(ctx: JobContext, cfg_file: Path, checkpoint: Path, out: Path) -> dict:
    _run_child(ctx, [sys.executable, "-m", "tengine", "evaluate", str(cfg_file),
                     "--checkpoint", str(checkpoint), "--out", str(out)])
    return json.loads(out.read_text())


@EXECUTORS.register("retrain")
def run_retrain(ctx: JobContext) -> dict[str, Any]:
    """`train`, and the new version's parent is what `parent_alias` (default `production`) of
    the registered model points at when the job starts, else its latest version; with
    `init_from_parent` the run starts from the parent's weights (its artifact, sha256 checked)
    instead of from scratch."""
    return run_train(ctx)


@EXECUTORS.register("evaluate")
def run_evaluate(ctx: JobContext) -> dict[str, Any]:
    """Evaluate a registered model (`model`, `ref` default latest) or a `checkpoint` path on the
    validation split of the job's `config`, else of the config its run was trained with."""
    conf, model = ctx.job.config, None
    if conf.get("model"):
        version = ctx.client.registry.get(conf["model"], conf.get("ref", "latest"))
        checkpoint = use_version(version)  # refused if it changed since it was registered
        source = str(checkpoint)  # the artifact holds the run's config.yaml and tokenizer
        model = {"name": version.name, "version": version.version}
    elif conf.get("checkpoint"):
        checkpoint = Path(conf["checkpoint"])
        source = str(checkpoint.parent.parent)
    else:
        raise JobFailed("an evaluate job needs `model` (a registered model) or `checkpoint`")
    with tempfile.TemporaryDirectory(prefix="tengine-job-") as tmp:
        if isinstance(conf.get("config"), dict):
            cfg_file = _config_file(tmp, conf["config"])
        elif source and (Path(source) / "config.yaml").is_file():
            cfg_file = Path(source) / "config.yaml"  # the resolved config the run saved
        else:
            raise JobFailed(f"no config to evaluate {checkpoint} with: its run dir {source} has no "
                            "config.yaml; give the job a `config`")
        record = _evaluate_child(ctx, cfg_file, checkpoint, Path(tmp) / "metrics.json")
    metrics = {k: v for k, v in record.items() if k.startswith("val_")}
    ctx.log("evaluated " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if v is not None))
    return {"checkpoint": str(checkpoint), "step": record["step"], "metrics": metrics,
            **({"model": model} if model else {})}


@EXECUTORS.register("export")
def run_export(ctx: JobContext) -> dict[str, Any]:
    """Export a registered version (`model`, `ref` default latest; its artifact's sha256 checked
    first) with `tengine export` as a child, to `out` (default: `<artifact root>/<model>/bundles/
    v<version>-<job id>`), optional `formats` (a list), and attach the bundle to the version.
    A failed format fails the job: nothing is attached."""
    conf = ctx.job.config
    if not conf.get("model"):
        raise JobFailed("an export job needs `model` (a registered model name); optional `ref` "
                        "(version or alias, default latest), `formats`, `out`")
    version = ctx.client.registry.get(conf["model"], conf.get("ref", "latest"))
    artifact = use_version(version)  # refused if it changed since it was registered
    out, force = conf.get("out"), False
    if not out:
        from tengine.remote import is_remote

        root = ctx.client.registry.artifact_root()
        if is_remote(root):
            raise JobFailed(f"the artifact root {root} is an object store: give the export job "
                            "an `out` directory for its bundle")
        out, force = str(Path(root) / version.name / "bundles"
                         / f"v{version.version}-{ctx.job.id}"), True  # a retry redoes its own
    cmd = [sys.executable, "-m", "tengine", "export", str(artifact), "--out", out, "--json",
           *(["--force"] if force else [])]
    if conf.get("formats"):
        cmd += ["--formats", ",".join(conf["formats"])]
    report = _run_child_json(ctx, cmd)
    attached = attach_bundle(ctx.client.registry, version, Path(report["bundle"]), ctx.job.id)
    ctx.log(f"attached bundle {report['bundle']} ({', '.join(report['formats'])}) to "
            f"{version.name} v{version.version}")
    return {"bundle": report["bundle"], "formats": report["formats"], "parity": report["parity"],
            "model": {"name": version.name, "version": version.version},
            "attached": attached["sha256"]}


@EXECUTORS.register("sweep")
def run_sweep_job(ctx: JobContext) -> dict[str, Any]:
    """`sweep_file` (an absolute path the runner can read), `overrides` for the sweep file
    (`tengine jobs submit` makes its `root` absolute), `register` (the best trial's model name)."""
    conf = ctx.job.config
    if not conf.get("sweep_file"):
        raise JobFailed("a sweep job needs `sweep_file`; submit it with `tengine jobs submit "
                        "SWEEP.yaml --type sweep`")
    cmd = [sys.executable, "-m", "tengine", "sweep", conf["sweep_file"], "--json"]
    for item in conf.get("overrides", []):
        cmd += ["--set", item]
    if ctx.address:
        cmd += ["--address", ctx.address]
    report = _run_child_json(ctx, cmd)
    best = report.get("best") or {}
    result = {"sweep_dir": report["sweep_dir"], "trials": len(report["trials"]),
              "counts": report["counts"], "best": {k: best.get(k) for k in ("trial", "params", "best")}}
    if name := conf.get("register"):  # through the runner's own client, like train jobs
        from tengine.sweep.report import register_best

        result["model"] = register_best(ctx.client.registry, report, name, job_id=ctx.job.id,
                                        pack=_child_pack(ctx))
        ctx.log(f"registered {name} v{result['model']['version']} (best trial {best.get('trial')})")
    return result


def _config_file(directory: str, cfg: dict) -> Path:
    """The job's resolved config as a file for the child's command line (JSON is YAML)."""
    path = Path(directory) / "config.yaml"
    path.write_text(json.dumps(cfg))
    return path


def _train_command(ctx: JobContext, cfg_file: Path, run_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "tengine", "train", str(cfg_file), "--run-dir", str(run_dir),
           "--resume", "auto"]  # a retried attempt continues its own checkpoints
    resources = ctx.job.resources or {}
    if resources.get("workers"):
        cmd += ["--workers", str(int(resources["workers"]))]
    if resources.get("gpus_per_worker"):
        cmd += ["--gpus-per-worker", str(resources["gpus_per_worker"])]
    if ctx.address:
        cmd += ["--address", ctx.address]
    return cmd


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when the thread that started it dies."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, called after
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _run_child(ctx: JobContext, cmd: list[str], grace_s: float = 10.0) -> None:
    """Run `cmd` (`python -m tengine <command> …`), streaming its output into the job log; kill
    its process group on cancel."""
    what = " ".join(cmd[2:4])
    ctx.log(redact("$ " + " ".join(cmd)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           ALLOWED_IMPORTS_ENV: ",".join(ctx.child_allowed_imports()),
           "TENGINE_JOB_ID": ctx.job.id,  # the experiment DB records which job a run was
           **({"RAY_ADDRESS": ctx.address} if ctx.address else {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True, preexec_fn=_die_with_parent())
    tail: collections.deque[str] = collections.deque(maxlen=40)

    def pump() -> None:
        for raw in proc.stdout:
            line = redact(raw.rstrip())  # before it is kept anywhere: the log, the job's error
            tail.append(line)
            ctx.log(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        while proc.poll() is None:
            if ctx.cancelled.wait(0.5):
                break
    except BaseException:  # Ctrl-C in `tengine jobs work`, or any error here: no orphan
        _kill_group(proc, grace_s)
        raise
    finally:
        if ctx.cancelled.is_set():
            _kill_group(proc, grace_s)
            ctx.log(f"stopped `{what}` (process group {proc.pid}): the job's lease is gone")
        reader.join(timeout=10)
        proc.stdout.close()
    if ctx.cancelled.is_set():
        raise Cancelled
    if proc.returncode == PREEMPTED_EXIT_CODE:
        raise Preempted(f"`{what}` stopped resumably (exit {PREEMPTED_EXIT_CODE}): "
                        + (next((x for x in reversed(tail) if "stopping at step" in x), "")
                           or "checkpointed"))
    if proc.returncode != 0:
        errors = [line.removeprefix("tengine: error: ") for line in tail if "error" in line.lower()]
        raise JobFailed(f"`{what}` exited with code {proc.returncode}: "
                        + (" | ".join(errors[-3:]) or " | ".join(list(tail)[-3:]) or "no output"))


def _run_child_json(ctx: JobContext, cmd: list[str]) -> dict[str, Any]:
    """`_run_child`, and the last JSON line the child printed (its result, after its log)."""
    lines: list[str] = []

    def keep(*logged: str) -> None:  # the job log, and the result's line
        lines.extend(logged)
        ctx.log(*logged)

    _run_child(dataclasses.replace(ctx, log=keep), cmd)
    return json.loads(next(line for line in reversed(lines) if line.startswith("{")))


def _kill_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the child's process group, SIGKILL what is left after `grace_s`."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _child_pack(ctx: JobContext):
    """`pack` for register_checkpoint, run as `tengine registry pack` (the runner has no torch)."""
    def pack(checkpoint: Path, into: str | Path, run_dir: Path | None) -> dict[str, Any]:
        return _run_child_json(ctx, [
            sys.executable, "-m", "tengine", "registry", "pack", str(checkpoint), "--into",
            str(into), *(["--run-dir", str(run_dir)] if run_dir else [])])

    return pack


def _register(ctx: JobContext, name: str, cfg: dict, summary: dict, run_dir: Path,
              parent: int | None) -> dict[str, Any]:
    """Register the run's best (else last) checkpoint: a copy in the registry's artifact root
    (consolidated weights, config, tokenizer), with that checkpoint's own metrics and step."""
    checkpoint = summary.get("best_checkpoint") or summary.get("last_checkpoint")
    if not checkpoint:
        raise JobFailed(f"cannot register '{name}': the run wrote no checkpoint ({run_dir})")
    version = register_checkpoint(
        ctx.client.registry, name, Path(checkpoint), pack=_child_pack(ctx), run_dir=run_dir,
        config_hash=config_hash(cfg), source_run=str(run_dir), job_id=ctx.job.id,
        parent_version=parent, tags={"job_type": ctx.job.type})
    ctx.log(f"registered {name} v{version.version} ({version.artifact_uri}, from {checkpoint}, "
            f"sha256 {version.sha256[:12]}…)")
    return {"name": name, "version": version.version, "sha256": version.sha256,
            "artifact_uri": version.artifact_uri}


def _current_version(ctx: JobContext, name: str, alias: str) -> int | None:
    for ref in (alias, "latest"):
        try:
            return ctx.client.registry.get(name, ref).version
        except NotFound:
            continue
    return None
