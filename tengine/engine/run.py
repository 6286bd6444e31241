"""`engine.run(cfg)`: config → data, model, strategy → Trainer.train → summary.

    from tengine.config import load_config
    from tengine.engine import run
    summary = run(load_config("configs/quickstart.yaml"))

`preflight(cfg)` checks everything that can be checked without doing work (registry names,
import paths, data files) and raises one `ConfigError` listing every problem, so a typo fails in
a second instead of after the data is built.

`run` owns its run dir while it trains (`rundir_lock.py`): a second run on the same dir fails
before it touches anything. A caller that owns the dir already (the Ray Train driver, for its
workers) passes `lock_run_dir=False`.
"""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tengine.backends import BACKENDS, build_strategy
from tengine.config import TengineConfig
from tengine.data import COLLATORS, build_data
from tengine.data.sources import resolve_source, stdlib_glob
from tengine.data.tokens import shard_files
from tengine.engine.checkpoint import MANIFEST, read_manifest
from tengine.engine.data_context import DataContext, checkpoint_context, run_context
from tengine.engine.losses import resolve_loss
from tengine.engine.reporter import LocalReporter, Reporter
from tengine.engine.rundir_lock import RunDirBusy, hold_run_dir
from tengine.engine.seeding import seed_everything
from tengine.errors import ConfigError, TengineError
from tengine.models import build_model, check_model

FILE_SOURCES = ("text_files", "jsonl", "hf")


def preflight(cfg: TengineConfig) -> None:
    problems: list[str] = []

    def check(fn, *args) -> None:
        try:
            fn(*args)
        except TengineError as err:
            problems.extend(str(err).splitlines())

    check(check_model, cfg.model, cfg.task.type)
    check(resolve_loss, cfg.task)
    check(_check_backend, cfg)
    check(resolve_source, cfg.data.source)  # an import path is imported: typos fail here
    if cfg.data.collator is not None:
        check(COLLATORS.get, cfg.data.collator)
    check(_check_files, cfg)
    check(_check_storage, cfg)
    check(_check_resume, cfg.checkpoint.resume)
    from tengine.tracking import check_trackers

    check(check_trackers, cfg)
    if cfg.model.init_from:
        from tengine.engine.weights import check_weights_path

        check(check_weights_path, cfg.model.init_from)
    if problems:
        raise ConfigError(problems)


def _check_backend(cfg: TengineConfig) -> None:
    name = cfg.distributed.backend
    if name not in BACKENDS:  # a valid config value whose backend is not installed/built yet
        raise ConfigError(f"distributed.backend '{name}' is not available in this version; "
                          f"available: {', '.join(BACKENDS.names())}")
    from tengine.extras import BACKEND_PACKAGES
    from tengine.extras import check as check_installed

    for module, extra in BACKEND_PACKAGES.get(name, ()):  # a spec lookup, nothing imported
        check_installed(module, extra, f"distributed.backend '{name}'")
    if name == "deepspeed":
        from tengine.backends.deepspeed_config import deepspeed_config

        deepspeed_config(cfg)  # a user JSON that contradicts our config fails here
    if name == "fsdp" and cfg.precision == "fp16":
        raise ConfigError("precision 'fp16' with distributed.backend 'fsdp': FSDP2 here has no "
                          "sharded GradScaler; use bf16 (or fp32)")


STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "file")  # pyarrow's filesystems


def _check_storage(cfg: TengineConfig) -> None:
    storage = cfg.distributed.storage_path
    if storage and "://" in storage and storage.split("://")[0] not in STORAGE_SCHEMES:
        raise ConfigError(f"distributed.storage_path '{storage}': unknown scheme; use a directory "
                          f"or a URI of {', '.join(s + '://' for s in STORAGE_SCHEMES)}")


def _check_resume(resume: str) -> None:
    """An explicit checkpoint path must exist now; its hashes are verified when it is loaded."""
    if resume in ("auto", "never"):
        return
    path = Path(resume)
    if not (path / MANIFEST).is_file():
        what = "does not exist" if not path.exists() else "has no manifest.json (not a checkpoint)"
        raise ConfigError(f"checkpoint.resume: '{resume}' {what}; give a step_XXXXXXXX "
                          "checkpoint dir, 'auto' or 'never'")


def _check_files(cfg: TengineConfig) -> None:
    d = cfg.data
    problems = []
    if d.tokenizer_path and not Path(d.tokenizer_path).exists():
        problems.append(f"data.tokenizer_path: '{d.tokenizer_path}' does not exist; give a "
                        "tokenizer.json file or a save_pretrained directory")
    if d.source == "tokens":
        for field, pattern in (("data.path", d.path), ("data.val_path", d.val_path)):
            if pattern is None and field == "data.path":
                problems.append("data.path: the tokens source needs shards (a glob of .bin/.npy "
                                "files or a `tengine data prepare` directory)")
            elif pattern is not None:
                try:
                    shard_files(pattern, field, "train" if field == "data.path" else "val")
                except TengineError as err:
                    problems.append(str(err))
    paths = []
    if d.source in FILE_SOURCES:
        paths = [("data.path", d.path or (stdlib_glob() if d.source == "text_files" else None))]
        if d.val_path:
            paths.append(("data.val_path", d.val_path))
    for field, pattern in paths:
        if pattern is None:
            problems.append(f"{field}: the {d.source} source needs a path")
            continue
        looks_local = d.source != "hf" or Path(pattern).suffix or "/" in pattern or "*" in pattern
        if looks_local and not glob.glob(pattern, recursive=True):
            problems.append(f"{field}: no file matches '{pattern}'; check the path "
                            "(relative paths start at the current directory)")
    if problems:
        raise ConfigError(problems)


def model_for(cfg: TengineConfig, bundle, initial_weights: bool = True):
    """The model `cfg` names, sized by the data; `model.init_from`'s weights loaded into it."""
    model = build_model(cfg.model, bundle.vocab_size, cfg.task.num_classes or bundle.num_classes,
                        cfg.data.seq_len, task_type=cfg.task.type, pad_id=bundle.pad_id)
    if initial_weights and cfg.model.init_from:
        from tengine.engine.weights import init_from

        init_from(model, cfg.model.init_from, strict=cfg.model.init_strict)
    return model


def evaluate(cfg: TengineConfig, checkpoint: str | Path) -> dict[str, Any]:
    """Evaluate `checkpoint` in this process on the validation split of `cfg`'s data; writes
    nothing. `cfg` should be the config of the run that saved it (its model, data and backend:
    an fsdp or deepspeed checkpoint is loaded by its own backend, resharded to this one rank)."""
    from tengine.backends.process_group import world_of_one
    from tengine.config import TaskSpec
    from tengine.engine.artifact import WEIGHTS, is_artifact
    from tengine.engine.reporter import MemoryReporter
    from tengine.engine.trainer import Trainer

    if not (Path(checkpoint) / MANIFEST).is_file():
        raise ConfigError(f"checkpoint '{checkpoint}' is not a tengine checkpoint (no {MANIFEST}); "
                          "give a <run dir>/checkpoints/step_XXXXXXXX directory or a registered "
                          "model's artifact")
    packed = is_artifact(Path(checkpoint))  # a registry artifact: weights only, verified on load
    dist = {"workers": 0, **({"backend": "single"} if packed else {})}
    model_update = {"init_from": str(Path(checkpoint) / WEIGHTS)} if packed else {}
    quiet = {"trackers": ["jsonl"], "callbacks": []}  # an evaluation tracks nothing: a host
    silent = {"profile": False,  # no profile or alert either: it is not a run
              "alerts": cfg.monitoring.alerts.model_copy(update={"enabled": False})}
    cfg = cfg.model_copy(update={                     # without wandb can evaluate a W&B run
        "distributed": cfg.distributed.model_copy(update=dist),
        "model": cfg.model.model_copy(update=model_update),
        "logging": cfg.logging.model_copy(update=quiet),
        "monitoring": cfg.monitoring.model_copy(update=silent)})
    if packed:
        from tengine.files import verify_artifact

        verify_artifact(Path(checkpoint))
    preflight(cfg)
    # fsdp / deepspeed load their checkpoints through a one-rank group, gone afterwards
    one_rank = world_of_one() if cfg.distributed.backend != "single" else contextlib.nullcontext()
    with one_rank:
        seed_everything(cfg.seed, cfg.deterministic)
        context = DataContext(run_dir=None, saved=Path(checkpoint)) if packed \
            else checkpoint_context(checkpoint)  # the run's tokenizer
        bundle = build_data(cfg.data, cfg.task, context)
        if len(bundle.val) == 0:
            raise ConfigError("data: the validation split is empty; raise data.val_fraction or give "
                              "the source's validation files")
        model = model_for(cfg, bundle, initial_weights=packed)  # a checkpoint's weights follow
        trainer = Trainer(model, cfg, TaskSpec.from_config(cfg.task),
                          reporter=MemoryReporter(Path(checkpoint).parent.parent), pad_id=bundle.pad_id,
                          loss_floor=bundle.loss_floor)
        if packed:
            record = trainer.evaluate_weights(bundle.val, step=read_manifest(Path(checkpoint))["step"])
        else:
            record = trainer.evaluate_checkpoint(checkpoint, bundle.val)
    return {**record, "checkpoint": str(checkpoint), "loss_floor": bundle.loss_floor}


def run(cfg: TengineConfig, reporter: Reporter | None = None, strategy=None,
        run_dir: str | None = None, lock_run_dir: bool = True) -> dict[str, Any]:
    """Train `cfg` in this process (one rank of a group when launched by torchrun/Ray)."""
    from tengine.config import TaskSpec
    from tengine.engine.trainer import Trainer

    preflight(cfg)
    strategy = strategy or build_strategy(cfg)
    reporter = reporter or LocalReporter(run_dir or cfg.run_dir(), is_main=strategy.is_main)
    with _owning(reporter.run_dir, strategy) if lock_run_dir else contextlib.nullcontext():
        # the same seed on every rank: the initial weights must agree (FSDP shards each rank's
        # own copy); the Trainer reseeds with seed + rank for dropout afterwards
        seed_everything(cfg.seed, cfg.deterministic)
        bundle = build_data(cfg.data, cfg.task, run_context(cfg, reporter, strategy))
        model = model_for(cfg, bundle)
        trainer = Trainer(model, cfg, TaskSpec.from_config(cfg.task), strategy=strategy,
                          reporter=reporter, pad_id=bundle.pad_id, loss_floor=bundle.loss_floor)
        return trainer.train(bundle.train, bundle.val)


@contextlib.contextmanager
def _owning(run_dir: Path, strategy) -> Iterator[None]:
    """Rank 0 holds the run dir's lock; every rank learns whether it got it (one broadcast), so
    a busy dir fails the whole group at once instead of leaving ranks waiting for rank 0."""
    with contextlib.ExitStack() as stack:
        busy = None
        if strategy.is_main:
            try:
                stack.enter_context(hold_run_dir(run_dir))
            except RunDirBusy as err:
                busy = str(err)
        busy = strategy.broadcast(busy)
        if busy:
            raise RunDirBusy(busy)
        yield
