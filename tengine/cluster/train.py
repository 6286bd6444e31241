"""Ray Train driver: `tengine train CONFIG --workers N` runs the engine on N Ray workers.

    from tengine.cluster.train import fit
    summary = fit(cfg, run_dir="runs/quickstart", workers=2)

A TorchTrainer starts the workers (Ray creates the torch process group: gloo on CPU, NCCL on
GPUs); each runs `engine.run` with the `ddp`, `fsdp` or `deepspeed` backend. The run directory
must be on storage every worker sees (one machine, or NFS on a cluster): workers write metrics
and their checkpoint shards there, and a restarted worker group (FailureConfig) resumes from
the newest valid checkpoint in it, whatever `checkpoint.resume` said for the first start; this
driver owns the run dir meanwhile (`engine/rundir_lock.py`), so a second run on it fails. With
`distributed.storage_path` set (a directory or an `s3://`/`gs://` URI), every checkpoint is also
reported to Ray Train, which keeps `keep_last + keep_best` of them there (CheckpointConfig,
ranked by `checkpoint.monitor`), and a run whose run dir lacks Ray's newest checkpoint fetches
it from there before resuming (`reporter.py`). With no address and no RAY_ADDRESS, a Ray of its
own starts in this process (even if another Ray runs on the machine) and stops with it;
`--address auto` joins a running cluster.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tengine.config import TengineConfig, validate
from tengine.errors import ConfigError, TengineError

log = logging.getLogger("tengine")

# Ray Train's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (Ray's default
# 2 s), and a fit ends only at the first poll after the workers return: on average 1 s of every
# run (and of every sweep trial) spent waiting. Polling a few workers is a cheap remote call, and
# a missed poll is not a failure (a worker is declared dead after
# RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S, 10 min), so tengine polls every 0.5 s unless the user
# set the variable. Ray propagates it from the driver to the controller and workers.
HEALTH_CHECK_ENV, HEALTH_CHECK_INTERVAL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"


def _starts_file(run_dir: Path) -> Path:
    """Counts worker-group starts (restarts = starts - 1); beside the run dir, not in it, since
    a fresh run moves an older run dir aside after the count is written."""
    return run_dir.parent / f".{run_dir.name}.worker_group_starts"


def _train_worker(loop_config: dict) -> None:
    """Runs on every Ray worker: the same engine as a local run, one rank of the group."""
    import ray.train

    from tengine.backends.process_group import barrier, ensure_process_group
    from tengine.cluster.reporter import RayReporter, fetch_newest
    from tengine.engine import run

    cfg = validate(loop_config["config"])
    run_dir = Path(loop_config["run_dir"])
    if loop_config.get("launch"):  # env.json / REPRODUCE.md name the driver's command, not Ray's
        from tengine.engine.envinfo import LAUNCH_ENV

        os.environ[LAUNCH_ENV] = json.dumps(loop_config["launch"])
    starts = _starts_file(run_dir)
    restarted = starts.exists()  # an earlier group of this job ran: continue its checkpoints
    ensure_process_group()
    barrier()  # every rank has read `restarted` before rank 0 counts this start
    rank = ray.train.get_context().get_world_rank()
    if rank == 0:
        starts.write_text(str(int(starts.read_text() or 0) + 1 if restarted else 1))
    if restarted:
        cfg = cfg.model_copy(update={"checkpoint": cfg.checkpoint.model_copy(update={"resume": "auto"})})
    durable = bool(cfg.distributed.storage_path)  # a copy of each checkpoint in Ray's storage
    reporter = RayReporter(run_dir, is_main=rank == 0, monitor=cfg.checkpoint.monitor,
                           mode=cfg.checkpoint.mode, durable=durable)
    if durable and cfg.checkpoint.resume == "auto":
        if rank == 0:
            fetch_newest(reporter.checkpoint_root)
        barrier()
    run(cfg, run_dir=str(run_dir), reporter=reporter, lock_run_dir=False)  # the driver holds it


def preflight_cluster(cfg: TengineConfig, run_dir: Path, workers: int, gpus: float,
                      embedded: bool) -> None:
    """Checks that need the cluster, before any worker starts. Missing CPUs/GPUs are an error
    on the embedded Ray; on a joined cluster only a warning (its autoscaler may add nodes)."""
    import ray

    problems, short = [], []
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        problems.append(f"run dir '{run_dir}' is not writable ({err.strerror})")
    have = ray.cluster_resources()
    need_cpu = workers * cfg.distributed.cpus_per_worker
    if have.get("CPU", 0) < need_cpu:
        short.append(f"--workers {workers} × distributed.cpus_per_worker "
                        f"{cfg.distributed.cpus_per_worker} needs {need_cpu:g} CPUs; the cluster "
                        f"has {have.get('CPU', 0):g}")
    if gpus and have.get("GPU", 0) < workers * gpus:
        short.append(f"--workers {workers} × {gpus:g} GPUs needs {workers * gpus:g} GPUs; the "
                        f"cluster has {have.get('GPU', 0):g}")
    if gpus and cfg.precision == "bf16" and have.get("GPU", 0) >= 1:
        problems += _bf16_problem()
    if cfg.distributed.storage_path:
        problems += _storage_problem(cfg.distributed.storage_path)
    if embedded:
        problems += short
    for line in [] if embedded else short:
        log.warning("%s (waiting for the autoscaler)", line)
    if problems:
        raise ConfigError(problems)


def storage_uri(path: str) -> str:
    """A storage path as Ray wants it: URIs as they are, local paths absolute."""
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _storage_problem(path: str) -> list[str]:
    """Write and delete a probe file where Ray will keep checkpoints (local, NFS or s3://)."""
    import pyarrow.fs

    uri = storage_uri(path)
    try:
        fs, root = pyarrow.fs.FileSystem.from_uri(uri)
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(f"{root}/.tengine-write-test") as fh:
            fh.write(b"ok")
        fs.delete_file(f"{root}/.tengine-write-test")
    except Exception as err:  # noqa: BLE001 — any failure: say which path and why
        return [f"distributed.storage_path '{path}' is not writable: {type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}"]
    return []


def _bf16_problem() -> list[str]:
    """Ask one GPU worker whether its card computes in bf16 (V100/T4 do not)."""
    import ray

    @ray.remote(num_gpus=1)
    def probe() -> tuple[str, bool]:
        import torch

        return torch.cuda.get_device_name(), torch.cuda.is_bf16_supported()

    try:
        name, ok = ray.get(probe.remote(), timeout=120)
    except Exception as err:  # noqa: BLE001 — no GPU free yet: the workers will find out
        log.warning("could not check bf16 support on a GPU worker (%s)", err)
        return []
    return [] if ok else [f"precision 'bf16': the workers' {name} has no bf16; use fp16 or auto"]


def fit(cfg: TengineConfig, run_dir: str | Path | None = None, workers: int | None = None,
        gpus_per_worker: float | None = None, address: str | None = None,
        name: str | None = None, callbacks: list | None = None) -> dict[str, Any]:
    """Train `cfg` on Ray Train workers. `name` is the Ray Train run name (default: the run dir's
    name; a sweep trial passes its trial id); `callbacks` are Ray Train UserCallbacks."""
    from tengine.engine import preflight
    from tengine.engine.rundir_lock import hold_run_dir
    from tengine.tracking.db import pin_store

    workers = workers or cfg.distributed.workers
    gpus = cfg.distributed.gpus_per_worker if gpus_per_worker is None else gpus_per_worker
    run_dir = Path(run_dir or cfg.run_dir()).resolve()
    preflight(cfg)
    cfg = pin_store(cfg)  # the driver's runs root, not the worker's directory
    # this driver owns the run dir for the whole fit, Ray's restarts of the worker group
    # included (its workers do not take the lock); a busy dir fails before Ray starts
    with hold_run_dir(run_dir):
        _fit(cfg, run_dir, workers, gpus, address or os.environ.get("RAY_ADDRESS"), name, callbacks)
        return _record_restarts(run_dir)


def _fit(cfg: TengineConfig, run_dir: Path, workers: int, gpus: float, address: str | None,
         name: str | None, callbacks: list | None) -> None:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from tengine.engine.envinfo import launch_context

    started_here = not ray.is_initialized()
    if started_here and address:
        from tengine.cluster.client import join_cluster

        join_cluster(address, namespace=None, log_to_driver=True, configure_logging=False)
    elif started_here:  # no address: a Ray of our own ("local"), even if another one runs here
        ray.init(address="local", log_to_driver=True, configure_logging=False)
    try:
        preflight_cluster(cfg, run_dir, workers, gpus, embedded=not address)
        _starts_file(run_dir).unlink(missing_ok=True)
        resources = {"CPU": cfg.distributed.cpus_per_worker, **({"GPU": gpus} if gpus else {})}
        storage = cfg.distributed.storage_path or str(run_dir.parent / ".ray")
        ck = cfg.checkpoint  # Ray's copies (only with storage_path) are kept like the run dir's
        kept = CheckpointConfig(num_to_keep=ck.keep_last + ck.keep_best,
                                checkpoint_score_attribute=ck.monitor, checkpoint_score_order=ck.mode)
        os.environ.setdefault(HEALTH_CHECK_ENV, HEALTH_CHECK_INTERVAL_S)
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={"config": cfg.model_dump(mode="json"), "run_dir": str(run_dir),
                               "launch": launch_context()},
            torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=bool(gpus),
                                         resources_per_worker=resources),
            run_config=RunConfig(
                name=name or run_dir.name, storage_path=storage_uri(storage), checkpoint_config=kept,
                failure_config=FailureConfig(max_failures=cfg.distributed.max_failures),
                callbacks=callbacks or []),
        )
        trainer.fit()
    except TengineError:
        raise
    except Exception as err:  # noqa: BLE001 — a worker's TengineError arrives wrapped by Ray
        raise TengineError(f"Ray training failed: {type(err).__name__}: {err}") from err
    finally:
        if started_here:
            ray.shutdown()


def _record_restarts(run_dir: Path) -> dict[str, Any]:
    """Add how often Ray restarted the worker group in this job to summary.json."""
    from tengine.engine.reporter import write_json

    summary = json.loads((run_dir / "summary.json").read_text())
    starts = _starts_file(run_dir)
    summary["restarts"] = max(0, int(starts.read_text()) - 1) if starts.exists() else 0
    starts.unlink(missing_ok=True)
    write_json(run_dir / "summary.json", summary)
    return summary
