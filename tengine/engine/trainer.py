"""The Trainer: the training and validation loops, on top of the Strategy and Reporter seams.

    trainer = Trainer(model, cfg, TaskSpec.language_modeling())
    summary = trainer.train(train_dataset, val_dataset)     # dict, also run_dir/summary.json

`fit()` and `train_step()` read top to bottom; components (strategy, loss, gradient monitor,
metrics, checkpoints, reporter) are called explicitly and callbacks only observe. One optimizer
step is one window of `grad_accum_steps` micro-batches (shorter at the end of an epoch), and
every piece of state that decides the next step is saved, so a resumed run continues the same
loss curve.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from tengine.backends import Strategy, build_strategy
from tengine.config import TaskSpec, TengineConfig, to_yaml
from tengine.data.collators import build_collator
from tengine.data.loader import DataLoaderFactory
from tengine.data.tokenizers import SAVED_FILES as TOKENIZER_FILES
from tengine.engine.callbacks import (
    Callback,
    KillRankAtStep,
    Plots,
    ProgressBar,
    progress_enabled,
)
from tengine.engine.checkpoint import CheckpointManager
from tengine.engine.envinfo import environment, reproduce_md
from tengine.engine.gradients import GradientMonitor, StepHealth
from tengine.engine.losses import LossOutput, LossStrategy, build_loss
from tengine.engine.metrics import Accumulator, MetricsEngine, batch_tokens, flops_per_token
from tengine.engine.optim import apply_hyperparameters, build_optimizer, build_scheduler
from tengine.engine.preemption import StopRequest
from tengine.engine.reporter import LocalReporter, Reporter, write_json
from tengine.engine.seeding import rng_state, seed_everything, set_rng_state
from tengine.errors import CheckpointError, DataError, ModelError

log = logging.getLogger("tengine")


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done (skipped non-finite steps included)
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of `epoch` consumed
    best_metric: float | None = None
    evals_without_improvement: int = 0
    global_batch: int = 0  # micro-batch × world size when saved: maps batch_in_epoch to a new world
    tokens: int = 0  # tokens trained on before this process (resumed runs)
    wall_s: float = 0.0  # wall time of earlier processes of this run

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> TrainState:
        """Fields this version knows; a field a newer version added is ignored (logged), one an
        older checkpoint lacks keeps its default."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(saved) - known)
        if extra:
            log.info("checkpoint trainer state: ignoring fields this version does not know: %s",
                     ", ".join(extra))
        return cls(**{k: v for k, v in saved.items() if k in known})


def archive_previous_run(run_dir: Path) -> Path | None:
    """A fresh start in a used run dir moves the old run aside (`<dir>-<time>`): nothing lost.
    The tokenizer files stay too (copied back): when they are there at this point the data of
    this run was just built with them (a run whose checkpoints all failed verification)."""
    if not ((run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists()):
        return None
    target = run_dir.with_name(f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    suffix = 0
    while target.exists():
        suffix += 1
        target = target.with_name(f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}-{suffix}")
    run_dir.rename(target)
    kept = [name for name in TOKENIZER_FILES if (target / name).is_file()]
    if kept:
        run_dir.mkdir(parents=True)
        for name in kept:
            shutil.copy2(target / name, run_dir / name)
    log.warning("not resuming: moved the earlier run in %s to %s", run_dir, target)
    return target


def accepted_inputs(model: nn.Module) -> set[str] | None:
    """Batch keys `model.forward` takes (None = any: it has **kwargs)."""
    params = inspect.signature(model.forward).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


def model_inputs(batch: dict, accepted: set[str] | None = None) -> dict:
    """The batch minus `labels` (the loss reads them; an HF model would compute its own loss),
    and minus what the model does not take (an `attention_mask` for a model without one)."""
    return {k: v for k, v in batch.items()
            if k != "labels" and (accepted is None or k in accepted)}


def logits_of(outputs: Any) -> torch.Tensor:
    """A tensor, a `ModelOutput`/dict with `logits`, or a tuple whose first item is the logits."""
    if torch.is_tensor(outputs):
        return outputs
    if isinstance(outputs, Mapping):
        if "logits" not in outputs:
            raise ModelError(f"the model returned a {type(outputs).__name__} without 'logits' "
                            f"(keys: {', '.join(outputs)}); return the logits tensor")
        return outputs["logits"]
    if isinstance(outputs, (tuple, list)) and outputs and torch.is_tensor(outputs[0]):
        return outputs[0]
    raise ModelError(f"the model returned {type(outputs).__name__}; return a logits tensor, a "
                    "mapping with 'logits' or a tuple whose first item is the logits")


class Trainer:
    def __init__(self, model: nn.Module, config: TengineConfig, task_spec: TaskSpec | None = None,
                 *, strategy: Strategy | None = None, reporter: Reporter | None = None,
                 loss: LossStrategy | None = None, callbacks: list[Callback] | None = None,
                 pad_id: int = 0, loss_floor: float | None = None):
        self.cfg = task_spec.apply(config) if task_spec is not None else config
        cfg = self.cfg
        self.strategy = strategy or build_strategy(cfg)
        seed_everything(cfg.seed + self.strategy.rank, cfg.deterministic)
        self.reporter = reporter or LocalReporter(cfg.run_dir(), is_main=self.strategy.is_main)
        self.loss = loss or build_loss(cfg.task)
        self.model = self.strategy.prepare(
            model, lambda m: build_optimizer(m, cfg.optim, self.strategy.device))
        self.accepted = accepted_inputs(self.strategy.unwrap())
        self.compute = self.strategy.compile_step(self._forward_loss) if cfg.compile \
            else self._forward_loss
        self.grad_monitor = GradientMonitor(cfg.training.max_nonfinite_steps,
                                            scaled=self.strategy.precision == "fp16")
        ck = cfg.checkpoint
        self.checkpoints = CheckpointManager(
            self.reporter.checkpoint_root, keep_last=ck.keep_last, keep_best=ck.keep_best,
            monitor=ck.monitor, mode=ck.mode, is_main=self.strategy.is_main,
            barrier=self.strategy.barrier, broadcast=self.strategy.broadcast,
            all_gather=self.strategy.all_gather, rank=self.strategy.rank)
        self.callbacks = [ProgressBar(progress_enabled(cfg.logging.progress_bar))]
        if cfg.logging.plots:
            self.callbacks.append(Plots(self.reporter.run_dir))
        if cfg.distributed.kill_rank_at_step:
            self.callbacks.append(KillRankAtStep(cfg.distributed.kill_rank_at_step,
                                                 self.reporter.run_dir))
        self.callbacks += callbacks or []
        self.pad_id, self.loss_floor = pad_id, loss_floor
        self.state = TrainState()
        self.stop = StopRequest(cfg.training.max_time)
        self._stop_votes: torch.Tensor | None = None  # ranks asking to stop, from train_step
        self.last: dict[str, dict] = {}  # latest train/val records
        self.resumed_from: Path | None = None
        self.archived: Path | None = None  # where a fresh start moved the run dir's old run

    # --- public API --------------------------------------------------------------------------
    def train(self, train_data: Dataset, val_data: Dataset | None = None) -> dict[str, Any]:
        cfg, s = self.cfg, self.strategy
        loaders = self._loaders()
        self.train_loader = loaders.train(train_data)
        self.val_loader = loaders.val(val_data, cfg.training.eval_batches) if val_data is not None else None
        self.batches_per_epoch = self.train_loader.sampler.batches_per_epoch()
        if self.batches_per_epoch == 0:
            raise DataError(
                f"data: the train split has {len(train_data)} examples, fewer than "
                f"training.micro_batch_size ({cfg.training.micro_batch_size}) × workers "
                f"({s.world_size}); lower the micro-batch or add data")
        self.max_steps = self._total_steps()
        self.scheduler = build_scheduler(s.optimizer, cfg.schedule, self.max_steps)
        self.metrics = self._metrics_engine()
        from tengine.tracking import build_callbacks

        # trackers only for training (an evaluation logs nothing), on rank 0
        self.callbacks += build_callbacks(cfg, self.reporter.run_dir, s.is_main)
        return self.fit()

    def evaluate_checkpoint(self, checkpoint: str | Path, val_data: Dataset) -> dict[str, Any]:
        """Load `checkpoint` (verified against its manifest; any backend, any world size) and
        evaluate it on `val_data` (the first `training.eval_batches` × micro-batch items, or all). Returns the `val`
        record: val_loss, val_perplexity or val_accuracy, ... ."""
        path = self.checkpoints.resolve(str(checkpoint))
        self.val_loader = self._loaders().val(val_data, self.cfg.training.eval_batches)
        self.scheduler = build_scheduler(self.strategy.optimizer, self.cfg.schedule, 1)
        self.metrics = self._metrics_engine()
        self._restore(path)
        return self.evaluate()

    def evaluate_weights(self, val_data: Dataset, step: int) -> dict[str, Any]:
        """Evaluate the model as it is (its weights loaded at build, e.g. a registry artifact)
        on `val_data`, like `evaluate_checkpoint`; `step` is the one its weights are from."""
        self.val_loader = self._loaders().val(val_data, self.cfg.training.eval_batches)
        self.metrics = self._metrics_engine()
        self.state.step = step
        return self.evaluate()

    def fit(self) -> dict[str, Any]:
        status = "completed"
        self.stop.install()
        try:
            self._start()
            while self.state.step < self.max_steps:
                health = self.train_step(self._next_window())
                self.state.step += 1
                record = self._log_train(health) if self._due(self.cfg.training.log_every_n_steps) else None
                self._notify("on_step_end", record)
                if self.val_loader is not None and self._due(self.cfg.training.eval_every_n_steps):
                    if self._early_stop(self.evaluate()):
                        status = "early_stopped"
                        break
                if self._due(self.cfg.checkpoint.every_n_steps):
                    self.save_checkpoint()
                if self.state.step == self.cfg.training.halt_at_step:
                    status = "halted"
                    break
                if self._stop_requested():
                    log.warning("%s: stopping at step %d; the same command resumes",
                                self.stop.reason(), self.state.step)
                    status = "preempted"
                    break
        except BaseException as err:  # record why the run ended, then let the error through
            # SystemExit: the process was told to end the run (a sweep scheduler stopping a trial)
            status = ("interrupted" if isinstance(err, KeyboardInterrupt)
                      else "stopped" if isinstance(err, SystemExit) else "failed")
            try:
                self._write_summary(status, error=f"{type(err).__name__}: {err}")
            except Exception:  # noqa: BLE001 — never mask the original error
                log.exception("could not write summary.json after the run failed")
            raise
        finally:
            self.stop.uninstall()
        return self._finish(status)

    def train_step(self, window: list[dict]) -> StepHealth:
        """One optimizer step over a window of micro-batches; returns the step's health."""
        s = self.strategy
        # Items (tokens, samples) in the window on all ranks. Each rank divides by global/world:
        # the backends average gradients over ranks, so the result is the exact global mean even
        # when ranks hold different counts (padding, class weights). Counted on the CPU batch;
        # torch.full (not torch.tensor) so no host→device copy syncs the CUDA stream.
        local = sum(self.loss.count(b) for b in window)
        total = s.all_reduce(torch.full((), local, device=s.device, dtype=torch.float32))
        norm = total / s.world_size
        loss_sum = count = torch.zeros((), device=s.device)
        tokens = 0
        for i, batch in enumerate(window):
            tokens += batch_tokens(batch)
            batch = s.to_device(batch)
            with s.accumulate(sync=i == len(window) - 1):
                with s.autocast():
                    out = self.compute(batch)
                s.backward(out.loss_sum / norm)
            loss_sum, count = loss_sum + out.loss_sum.detach(), count + out.count
        grad_norm = s.clip_grad_norm(self.cfg.optim.grad_clip)
        # one reduction carries the loss and whether any rank was asked to stop (SIGTERM,
        # max_time), so all ranks stop at the same step; it is read after the step's host sync
        stop = torch.full((), float(self.stop.requested), device=s.device)
        reduced = s.all_reduce(torch.stack([loss_sum, stop]))
        global_loss, self._stop_votes = reduced[0] / total, reduced[1]  # the norm is already global
        health = self.grad_monitor.observe(global_loss, grad_norm, self.state.step + 1)
        if health.ok:
            s.optimizer_step()
            if grad_norm is None:  # measured inside the backend's step, which skips a bad one
                health = self.grad_monitor.after_step(health, s.grad_norm_after_step(),
                                                      self.state.step + 1)
            if health.ok:
                self.metrics.add_train(LossOutput(loss_sum, count), tokens)
        else:
            s.skip_step()
        self.scheduler.step()  # a skipped step still uses its schedule slot
        return health

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        self.metrics.pause()
        self.model.eval()
        acc = Accumulator(self.strategy.device)
        batch, done = None, 0
        for batch in self.val_loader:
            batch = self.strategy.to_device(batch)
            with self.strategy.autocast():
                acc.add(self.compute(batch))
            done += 1
        # a rank holding fewer items runs as many forwards as the fullest one (FSDP and ZeRO-3
        # gather weights in every forward) on a batch it already counted, and drops the outputs
        for _ in range(self.val_loader.sampler.max_batches - done):
            batch = batch if batch is not None else self.strategy.to_device(
                self.val_loader.collate_fn([self.val_loader.dataset[0]]))
            with self.strategy.autocast():
                self.compute(batch)
        self.model.train()
        stats = acc.read(self.strategy.all_reduce)
        record = {"split": "val", "step": self.state.step, "epoch": self.state.epoch,
                  **{f"val_{k}": v for k, v in stats.items()}}
        self.last["val"] = record
        self.reporter.log(record)
        self._notify("on_eval_end", record)
        self.metrics.resume_clock()
        return record

    def _loaders(self) -> DataLoaderFactory:
        cfg, s = self.cfg, self.strategy
        return DataLoaderFactory(
            micro_batch_size=cfg.training.micro_batch_size, seed=cfg.seed, rank=s.rank,
            world_size=s.world_size, num_workers=cfg.data.num_workers,
            collate=build_collator(cfg.data.collator, cfg.task.type, self.pad_id),
            pin_memory=s.device.type == "cuda")

    def _metrics_engine(self) -> MetricsEngine:
        s = self.strategy
        return MetricsEngine(s.device, flops_per_token(s.unwrap(), self.cfg.data.seq_len),
                             s.world_size, s.all_reduce)

    def _forward_loss(self, batch: dict) -> LossOutput:
        return self.loss(logits_of(self.model(**model_inputs(batch, self.accepted))), batch)

    def save_checkpoint(self) -> Path:
        self.metrics.pause()
        state = {**asdict(self.state), "global_batch": self._global_batch(),
                 "world_size": self.strategy.world_size, "tokens": self.state.tokens + self.metrics.total_tokens,
                 "wall_s": self.state.wall_s + time.perf_counter() - self._t0,
                 "grad_monitor": self.grad_monitor.state_dict(),
                 "callbacks": self._callback_states()}
        rank = self.strategy.rank

        def write(directory: Path) -> None:
            self.strategy.save(directory, extra={"scheduler": self.scheduler.state_dict()})
            torch.save(rng_state(), directory / f"rng_rank{rank}.pt")
            if self.strategy.is_main:
                (directory / "trainer_state.json").write_text(json.dumps(state, indent=1))

        monitored = self._monitored()
        path = self.checkpoints.save(self.state.step, write, monitored)
        self.reporter.checkpoint_saved(path, monitored)
        self._notify("on_checkpoint_saved", path)
        self.metrics.resume_clock()
        return path

    # --- steps of fit ------------------------------------------------------------------------
    def _start(self) -> None:
        self._t0 = time.perf_counter()
        self.resumed_from = self.checkpoints.resolve(self.cfg.checkpoint.resume)
        if self.strategy.is_main:
            run_dir = self.reporter.run_dir
            if self.resumed_from is None:
                self.archived = archive_previous_run(run_dir)  # (the db tracker follows it)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(to_yaml(self.cfg))
            env = environment()
            write_json(run_dir / "env.json", env)
            (run_dir / "REPRODUCE.md").write_text(reproduce_md(self.cfg, env))
        self.strategy.barrier()
        if self.resumed_from is not None:
            self._restore(self.resumed_from)
            if self.strategy.is_main:
                self.checkpoints.discard_after(self.resumed_from, self.state.step)
            # where a run continued from, in its own record (PBT: the donor's checkpoint)
            self.reporter.log({"split": "resume", "step": self.state.step,
                               "from": str(self.resumed_from)})
            if self.state.step >= self.max_steps:
                log.warning("checkpoint %s is at step %d, max_steps is %d: nothing left to train",
                            self.resumed_from, self.state.step, self.max_steps)
        self.train_loader.sampler.set_epoch(self.state.epoch, self.state.batch_in_epoch)
        self._batches = iter(self.train_loader)
        self.model.train()
        self._notify("on_fit_start")

    def _restore(self, path: Path) -> None:
        saved = json.loads((path / "trainer_state.json").read_text())
        saved_world = saved.pop("world_size", self.strategy.world_size)
        if saved_world != self.strategy.world_size and not self.strategy.reshards:
            raise CheckpointError(
                f"{path} was saved by {saved_world} {self.strategy.name} ranks and this run has "
                f"{self.strategy.world_size}; {self.strategy.name} checkpoints do not reshard: "
                f"resume with {saved_world} workers (ddp and fsdp checkpoints reshard)")
        try:
            extra = self.strategy.load(path)
        except (RuntimeError, KeyError, ValueError) as err:  # load_state_dict: keys or shapes
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(
                f"{path} does not fit this model or optimizer ({first[:300]}); resume it with "
                "the config that saved it, or start fresh (checkpoint.resume: never; "
                "model.init_from loads weights alone and reports the keys that differ)") from err
        self.scheduler.load_state_dict(extra["scheduler"])
        apply_hyperparameters(self.strategy.optimizer, self.scheduler, self.cfg.optim)
        rng_file = path / f"rng_rank{self.strategy.rank}.pt"
        if rng_file.is_file():
            set_rng_state(torch.load(rng_file, weights_only=True))
        else:  # more ranks than the run that saved: this rank keeps its fresh seed + rank
            log.warning("%s has no RNG state for rank %d; using seed + rank", path, self.strategy.rank)
        self.grad_monitor.load_state_dict(saved.pop("grad_monitor"))
        self._load_callback_states(saved.pop("callbacks", {}))
        self.state = TrainState.from_saved(saved)
        self._remap_epoch_position()

    def _callback_keys(self) -> list[str]:
        """Each callback's name in a checkpoint; two of one class: the second is `Name#2`."""
        keys: list[str] = []
        for cb in self.callbacks:
            key, n = cb.state_key, 1
            while key in keys:
                n += 1
                key = f"{cb.state_key}#{n}"
            keys.append(key)
        return keys

    def _callback_states(self) -> dict[str, dict]:
        return {key: cb.state_dict() for key, cb in zip(self._callback_keys(), self.callbacks, strict=True)}

    def _load_callback_states(self, saved: dict[str, dict] | list) -> None:
        """By name: adding or removing a callback (logging.plots) does not shift the others.
        A callback with no saved state keeps its fresh one; a saved one no callback claims is
        dropped. (A list is the old positional format: nothing in it can be matched by name.)"""
        if not isinstance(saved, dict):
            return
        for key, cb in zip(self._callback_keys(), self.callbacks, strict=True):
            if key in saved:
                cb.load_state_dict(saved[key])

    def _global_batch(self) -> int:
        return self.cfg.training.micro_batch_size * self.strategy.world_size

    def _remap_epoch_position(self) -> None:
        """A checkpoint from another world size: the samples already consumed this epoch stay
        consumed, counted in this run's micro-batches per rank."""
        old, new = self.state.global_batch or self._global_batch(), self._global_batch()
        if old == new:
            return
        samples = self.state.batch_in_epoch * old
        if samples % new:
            log.warning("resuming with global batch %d (was %d): %d samples into the epoch is not "
                        "a whole number of batches; rounding down", new, old, samples)
        self.state.batch_in_epoch, self.state.global_batch = samples // new, new

    def _next_window(self) -> list[dict]:
        window: list[dict] = []
        while len(window) < self.cfg.training.grad_accum_steps:
            batch = next(self._batches, None)
            if batch is None:
                if window:
                    break  # short last window of the epoch
                self._notify("on_epoch_end", self.state.epoch)
                self.state.epoch, self.state.batch_in_epoch = self.state.epoch + 1, 0
                self.train_loader.sampler.set_epoch(self.state.epoch)
                self._batches = iter(self.train_loader)
                continue
            window.append(batch)
            self.state.batch_in_epoch += 1
        return window

    def _log_train(self, health: StepHealth) -> dict[str, Any]:
        record = {"split": "train", "step": self.state.step, "epoch": self.state.epoch,
                  **self.metrics.train_record(), "step_loss": health.loss,
                  "lr": self.scheduler.get_last_lr()[0], "grad_norm": health.grad_norm,
                  "skipped_steps": self.grad_monitor.skipped_steps}
        self.last["train"] = record
        self.reporter.log(record)
        return record

    def _stop_requested(self) -> bool:
        if self.strategy.world_size == 1 or self._stop_votes is None:
            return self.stop.requested
        return self._stop_votes.item() > 0  # computed with the step's loss: already synced

    def _early_stop(self, val: dict[str, Any]) -> bool:
        patience = self.cfg.training.early_stopping.patience
        value = self._monitored().get(self.cfg.checkpoint.monitor)
        if value is None:
            return False
        sign = 1.0 if self.cfg.checkpoint.mode == "min" else -1.0
        best = self.state.best_metric
        if best is None or sign * (best - value) > self.cfg.training.early_stopping.min_delta:
            self.state.best_metric, self.state.evals_without_improvement = value, 0
            return False
        self.state.evals_without_improvement += 1
        return patience is not None and self.state.evals_without_improvement >= patience

    def _finish(self, status: str) -> dict[str, Any]:
        last_val = self.last.get("val", {}).get("step")
        # halted and preempted runs end quickly and resumably: no final evaluation
        if status not in ("halted", "preempted") and self.val_loader is not None \
                and last_val != self.state.step:
            self.evaluate()
        # rank 0 decides for all: ranks' listings of a shared dir can differ (NFS caching)
        latest = self.checkpoints.checkpoints() if self.strategy.is_main else []
        if self.strategy.broadcast(not latest or latest[-1].name != f"step_{self.state.step:08d}"):
            self.save_checkpoint()
        return self._write_summary(status)

    def _write_summary(self, status: str, error: str | None = None) -> dict[str, Any]:
        train, val = self.last.get("train", {}), self.last.get("val", {})
        best = self.checkpoints.best() if self.strategy.is_main else None
        newest = self.checkpoints.checkpoints()
        summary = {
            "status": status, "steps": self.state.step, "max_steps": self.max_steps,
            "epochs": round(self.state.epoch + self.state.batch_in_epoch / self.batches_per_epoch, 4),
            "tokens": self.state.tokens + self.metrics.total_tokens,
            "train_loss": train.get("loss"), "val_loss": val.get("val_loss"),
            "val_accuracy": val.get("val_accuracy"), "best_val_loss": self._best_val_loss(),
            "loss_floor": self.loss_floor,
            "best_checkpoint": str(best) if best else None,
            "last_checkpoint": str(newest[-1]) if newest else None,
            "tokens_per_s": self.metrics.average_tokens_per_s(),
            "mfu": self.metrics.mfu(self.metrics.average_tokens_per_s()),
            "peak_mem_gb": self.metrics.peak_memory_gb(),
            "wall_s": round(self.state.wall_s + time.perf_counter() - self._t0, 3),
            "skipped_steps": self.grad_monitor.skipped_steps,
            "overflow_steps": self.grad_monitor.overflow_steps,
            "precision": self.strategy.precision, "backend": self.strategy.name,
            "world_size": self.strategy.world_size,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "run_dir": str(self.reporter.run_dir),
        }
        if error:
            summary["error"] = error
        if status == "preempted":
            summary["stopped_by"] = self.stop.reason()
        self._notify("on_fit_end", summary)
        self.reporter.finish(summary)
        return summary

    # --- helpers -------------------------------------------------------------------------------
    def _total_steps(self) -> int:
        t = self.cfg.training
        per_epoch = math.ceil(self.batches_per_epoch / t.grad_accum_steps)
        return t.max_steps or per_epoch * (t.epochs or 1)

    def _due(self, every: int) -> bool:
        return every > 0 and self.state.step % every == 0

    def _monitored(self) -> dict[str, float]:
        out = {}
        if "val" in self.last:
            out.update(val_loss=self.last["val"]["val_loss"],
                       val_accuracy=self.last["val"].get("val_accuracy"))
        if "train" in self.last:
            out["train_loss"] = self.last["train"]["loss"]
        return {k: v for k, v in out.items() if v is not None}

    def _best_val_loss(self) -> float | None:
        values = [self.last["val"]["val_loss"]] if "val" in self.last else []
        if self.cfg.checkpoint.monitor == "val_loss" and self.state.best_metric is not None:
            values.append(self.state.best_metric)
        return min(values) if values else None

    def _notify(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)
