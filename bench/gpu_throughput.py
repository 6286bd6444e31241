"""GPU throughput: tengine's engine vs a hand-written loop, GPT-2 124M, one process, one GPU.

    .venv/bin/python bench/gpu_throughput.py [--batch 32] [--steps 30] [--warmup 8] [--no-compile]
        [--variants raw,single,ddp,raw_ds,deepspeed]
    .venv/bin/python bench/gpu_throughput.py --tiny --device cpu     # smoke test, no GPU

Every variant trains the same tengine `GPT` (size gpt2, vocab 50304, T=1024) from the same seed,
bf16, SDPA, torch.compile, on random tokens pre-generated in memory (data loading is not the
bottleneck), in this one process, one after the other:

    raw            hand-written loop, the raw path of ../shared/bench/raw_gpt_anchor.py: forward
                   and cross-entropy compiled together, bf16 autocast, fused AdamW, clip 1.0
    raw_eagerloss  (opt-in) the same, but only the model compiled and the loss computed eagerly
                   outside it, as the Trainer does: separates that cost from the engine's own
    single         Trainer, distributed.backend=single
    ddp            Trainer, distributed.backend=ddp (Accelerate; a world-size-1 process group)
    raw_ds         hand-written DeepSpeed ZeRO-2 loop (deepspeed.initialize, engine.compile())
    deepspeed      Trainer, distributed.backend=deepspeed, zero_stage=2 (if the backend exists)

Tokens/s are timed over `--steps` steps after `--warmup` steps, between two
torch.cuda.synchronize(); for the engine from a Callback's on_step_end, so its start (run dir,
env.json) and end (final checkpoint) are not timed. MFU uses 989 TFLOP/s (H100/H200 SXM dense
bf16) and the model's flops_per_token(T). Writes $OUT/gpu_throughput.json when $OUT is set.
Last line: `engine_vs_raw=<ddp tokens/s ÷ raw tokens/s>`. Targets: ddp ≥ 0.98× raw,
deepspeed ≥ 0.98× raw_ds.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tengine import TaskSpec, load_config
from tengine.backends import BACKENDS
from tengine.backends.process_group import world_of_one
from tengine.engine import Callback, Trainer
from tengine.models import build_model

PEAK_FLOPS = 989e12  # H100/H200 SXM dense bf16
DEFAULT_VARIANTS = "raw,single,ddp,raw_ds,deepspeed"
ALL_VARIANTS = ("raw", "raw_eagerloss", "single", "ddp", "raw_ds", "deepspeed")


# --- shared setup -------------------------------------------------------------------------------
class Settings:
    def __init__(self, a: argparse.Namespace):
        self.device = torch.device(a.device)
        self.tiny = a.tiny
        self.size = "tiny" if a.tiny else "gpt2"
        self.vocab = 4096 if a.tiny else 50304
        self.seq = 64 if a.tiny else 1024
        self.batch = a.batch or (4 if a.tiny else 32)
        self.steps, self.warmup = a.steps, a.warmup
        self.precision = "fp32" if a.tiny else "bf16"
        self.compile = not (a.no_compile or a.tiny)
        self.cuda = self.device.type == "cuda"

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def config(self, backend: str, root: str):
        """The engine's config: same model/optimizer as the raw loop, no eval/plots/bar,
        no periodic checkpoint, one log record (the last step, for its loss)."""
        return load_config(base={
            "name": f"bench-{backend}", "seed": 0, "precision": self.precision,
            "compile": self.compile,
            "model": {"name": "gpt", "size": self.size, "vocab_size": self.vocab,
                      "max_seq_len": self.seq},
            "data": {"seq_len": self.seq, "num_workers": 0},
            "training": {"max_steps": self.total_steps, "micro_batch_size": self.batch,
                         "eval_every_n_steps": 0, "log_every_n_steps": self.total_steps},
            "optim": {"lr": 3e-4, "weight_decay": 0.1, "betas": [0.9, 0.95], "grad_clip": 1.0},
            "schedule": {"name": "constant", "warmup_steps": 0},
            "checkpoint": {"every_n_steps": 0, "resume": "never"},
            "logging": {"root": root, "plots": False, "progress_bar": "off"},
            "distributed": {"backend": backend, "zero_stage": 2 if backend == "deepspeed" else 0},
        })

    def model(self) -> nn.Module:
        torch.manual_seed(0)
        cfg = self.config("single", "unused")
        return build_model(cfg.model, self.vocab, None, self.seq)


class TokenData(torch.utils.data.Dataset):
    """batch × (warmup + steps) random sequences, made once; items are views (no work per item)."""

    def __init__(self, s: Settings):
        n = s.batch * s.total_steps
        g = torch.Generator().manual_seed(1234)
        high = min(50257, s.vocab)
        self.input_ids = torch.randint(0, high, (n, s.seq), generator=g)
        self.labels = torch.randint(0, high, (n, s.seq), generator=g)
        if s.cuda:  # the raw loop copies slices of these straight to the GPU
            self.input_ids, self.labels = self.input_ids.pin_memory(), self.labels.pin_memory()

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}

    def batch(self, step: int, size: int, device: torch.device):
        sl = slice(step * size, (step + 1) * size)
        nb = device.type == "cuda"
        return (self.input_ids[sl].to(device, non_blocking=nb),
                self.labels[sl].to(device, non_blocking=nb))


class LMLoss(nn.Module):
    """GPT + mean next-token cross-entropy in one module, so compile sees both (as the anchor)."""

    def __init__(self, gpt: nn.Module):
        super().__init__()
        self.gpt = gpt

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.gpt(idx)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


def deepspeed_importable() -> str | None:
    """None when deepspeed imports, else why not."""
    try:
        import deepspeed  # noqa: F401
    except Exception as err:  # noqa: BLE001 — ImportError, or a broken install
        return f"{type(err).__name__}: {err}"
    return None


class SyncProbe:
    """Host syncs of one step, from torch's CUDA sync debug mode: `file:line` of each (CUDA only).

    Run on the last untimed step: the warnings it raises cost host time, never a timed step."""

    def __init__(self, s: Settings):
        self.enabled, self.sites, self._cm = s.cuda, None, None

    def start(self) -> None:
        if not self.enabled:
            return
        self.sites = []
        self._cm = warnings.catch_warnings()  # restores filters and showwarning on exit
        self._cm.__enter__()
        warnings.simplefilter("always")
        warnings.showwarning = self._record
        torch.cuda.set_sync_debug_mode("warn")

    def _record(self, message, category, filename, lineno, file=None, line=None) -> None:
        if "synchroniz" not in str(message):
            return
        frames = [f for f in traceback.extract_stack()[:-1]
                  if not f.filename.endswith("warnings.py")]
        where = f"{Path(filename).name}:{lineno}"
        outside = next((f for f in reversed(frames) if "/torch/" not in f.filename), None)
        if outside is not None and (outside.filename, outside.lineno) != (filename, lineno):
            where += f" (via {Path(outside.filename).name}:{outside.lineno})"
        self.sites.append(where)

    def stop(self) -> None:
        if self._cm is None:
            return
        torch.cuda.set_sync_debug_mode("default")
        self._cm.__exit__(None, None, None)
        self._cm = None

    def fields(self) -> dict:
        if self.sites is None:
            return {"syncs_per_step": None, "sync_sites": None}
        return {"syncs_per_step": len(self.sites), "sync_sites": self.sites}


def result(s: Settings, name: str, seconds: float, fpt: float, loss: float | None, **extra) -> dict:
    tok_s = s.batch * s.seq * s.steps / seconds
    mem = torch.cuda.max_memory_allocated() / 2**30 if s.cuda else None  # since cleanup()
    return {"variant": name, "batch": s.batch, "seq_len": s.seq, "steps": s.steps,
            "compile": s.compile, "precision": s.precision, "step_ms": seconds / s.steps * 1e3,
            "tokens_per_s": tok_s, "tflops": tok_s * fpt / 1e12, "mfu": tok_s * fpt / PEAK_FLOPS,
            "peak_mem_gib": mem, "final_loss": loss, **extra}


# --- raw loops ------------------------------------------------------------------------------------
def run_raw(s: Settings, data: TokenData, eager_loss: bool = False) -> dict:
    """raw_gpt_anchor.py's raw path on tengine's GPT."""
    model = s.model().to(s.device)
    fpt = model.flops_per_token(s.seq)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=s.cuda or None)
    if eager_loss:  # the Trainer's split: compiled model, loss outside it (sum / count)
        fwd = torch.compile(model) if s.compile else model

        def loss_fn(x, y):
            logits = fwd(x)
            flat = logits.reshape(-1, logits.size(-1)).float()
            return F.cross_entropy(flat, y.reshape(-1), reduction="sum") / y.numel()
    else:
        wrapped = LMLoss(model)
        loss_fn = torch.compile(wrapped) if s.compile else wrapped

    def step(x, y):
        with s.autocast():
            loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    seconds, loss, probe = time_raw_steps(s, data, step)
    return result(s, "raw_eagerloss" if eager_loss else "raw", seconds, fpt, loss, **probe)


def time_raw_steps(s: Settings, data: TokenData, step) -> tuple[float, float, dict]:
    """Warm up (host syncs of the last warm-up step recorded), then time the measured steps."""
    probe = SyncProbe(s)
    for i in range(s.warmup):
        if i == s.warmup - 1 and i > 0:
            s.sync()
            probe.start()
        step(*data.batch(i, s.batch, s.device))
    probe.stop()
    s.sync()
    t0 = time.perf_counter()
    for i in range(s.warmup, s.total_steps):
        loss = step(*data.batch(i, s.batch, s.device))
    s.sync()
    return time.perf_counter() - t0, float(loss.detach()), probe.fields()


def run_raw_deepspeed(s: Settings, data: TokenData) -> dict:
    """The anchor's use_ds path: deepspeed.initialize on the model, ZeRO-2, engine.compile()."""
    import deepspeed

    model = s.model()
    fpt = model.flops_per_token(s.seq)
    wrapped = LMLoss(model)
    opt = torch.optim.AdamW(wrapped.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    cfg = {"train_micro_batch_size_per_gpu": s.batch, "gradient_accumulation_steps": 1,
           "bf16": {"enabled": s.precision == "bf16"}, "zero_optimization": {"stage": 2},
           "gradient_clipping": 1.0, "zero_allow_untested_optimizer": True,
           "steps_per_print": 10**9}
    engine, opt, _, _ = deepspeed.initialize(model=wrapped, optimizer=opt, config=cfg)
    if s.compile:
        engine.compile()

    def step(x, y):
        loss = engine(x, y)
        engine.backward(loss)
        engine.step()
        return loss

    seconds, loss, probe = time_raw_steps(s, data, step)
    out = result(s, "raw_ds", seconds, fpt, loss, **probe)
    engine.destroy() if hasattr(engine, "destroy") else None
    return out


# --- the engine -----------------------------------------------------------------------------------
class StepClock(Callback):
    """Times steps warmup+1 .. max_steps: a device sync at both ends, none in between; probes
    step `warmup` (the last untimed one) for host syncs."""

    def __init__(self, s: Settings):
        self.s, self.t0, self.seconds, self.peak_mem, self.loss = s, 0.0, None, None, None
        self.probe = SyncProbe(s)

    def on_step_end(self, trainer, record) -> None:
        step = trainer.state.step
        if step == self.s.warmup - 1 and step > 0:
            self.s.sync()
            self.probe.start()
        elif step == self.s.warmup:
            self.probe.stop()
            self.s.sync()
            self.t0 = time.perf_counter()
        elif step == self.s.total_steps:
            self.s.sync()
            self.seconds = time.perf_counter() - self.t0
            if self.s.cuda:
                self.peak_mem = torch.cuda.max_memory_allocated() / 2**30
        if record is not None:
            self.loss = record.get("step_loss")


def run_engine(s: Settings, data: TokenData, backend: str) -> dict:
    model = s.model()
    fpt = model.flops_per_token(s.seq)
    clock = StepClock(s)
    with tempfile.TemporaryDirectory(prefix="tengine-bench-") as root:
        cfg = s.config(backend, root)
        trainer = Trainer(model, cfg, TaskSpec.language_modeling(), callbacks=[clock])
        summary = trainer.train(data)
        strategy = trainer.strategy
        del trainer
    if clock.seconds is None:
        raise RuntimeError(f"the run ended at step {summary.get('steps')} before step "
                           f"{s.total_steps} (status {summary.get('status')})")
    out = result(s, backend, clock.seconds, fpt, clock.loss, backend=summary.get("backend"),
                 engine_precision=summary.get("precision"), **clock.probe.fields())
    out["peak_mem_gib"] = clock.peak_mem  # before the final checkpoint
    with contextlib.suppress(Exception):
        strategy.teardown()
    return out


# --- driver ----------------------------------------------------------------------------------------
def matmul_peak() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * 20 / (time.perf_counter() - t)


def cleanup(s: Settings) -> None:
    gc.collect()
    if s.compile:
        torch._dynamo.reset()  # fresh caches: no recompile limit hit across variants
    if s.cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def fmt(value, spec: str, width: int) -> str:
    return f"{value:{spec}}".rjust(width) if value is not None else "-".rjust(width)


def print_table(rows: list[dict]) -> None:
    by = {r["variant"]: r for r in rows}
    raw, raw_ds = by.get("raw"), by.get("raw_ds")
    print(f"\n{'variant':14s} {'batch':>5s} {'step_ms':>8s} {'tokens/s':>10s} {'TFLOP/s':>8s} "
          f"{'MFU':>6s} {'vs_raw':>7s} {'vs_raw_ds':>9s} {'peak_GiB':>8s} {'loss':>7s} {'syncs':>5s}")
    for r in rows:
        r["vs_raw"] = r["tokens_per_s"] / raw["tokens_per_s"] if raw else None
        ds_rel = r["variant"] in ("raw_ds", "deepspeed") and raw_ds
        r["vs_raw_ds"] = r["tokens_per_s"] / raw_ds["tokens_per_s"] if ds_rel else None
        print(f"{r['variant']:14s} {r['batch']:5d} {r['step_ms']:8.1f} {r['tokens_per_s']:10.0f} "
              f"{r['tflops']:8.1f} {r['mfu']:6.1%} {fmt(r['vs_raw'], '.3f', 7)} "
              f"{fmt(r['vs_raw_ds'], '.3f', 9)} {fmt(r['peak_mem_gib'], '.1f', 8)} "
              f"{fmt(r['final_loss'], '.3f', 7)} {fmt(r['syncs_per_step'], 'd', 5)}")
    for r in rows:
        if r.get("sync_sites"):
            print(f"  {r['variant']}: host syncs in one step at {', '.join(r['sync_sites'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=None, help="micro-batch (default 32; 4 with --tiny)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--warmup", type=int, default=8, help="untimed steps first (compile happens here)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS,
                    help=f"comma list of {', '.join(ALL_VARIANTS)} (default {DEFAULT_VARIANTS})")
    ap.add_argument("--tiny", action="store_true", help="tiny GPT, T=64, batch 4, fp32, no compile")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    a = ap.parse_args()
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in ALL_VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(ALL_VARIANTS)}")
    if a.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the engine picks its device itself
    elif not torch.cuda.is_available():
        ap.error("no CUDA device; use --tiny --device cpu for a smoke test")
    if a.steps < 1 or a.warmup < 1:
        ap.error("--steps and --warmup must be ≥ 1")
    s = Settings(a)
    world_of_one()  # ddp/deepspeed join a one-rank group; single and raw ignore it
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    meta = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if s.cuda else "cpu",
            "size": s.size, "vocab": s.vocab, "seq_len": s.seq, "batch": s.batch,
            "steps": s.steps, "warmup": s.warmup, "compile": s.compile, "precision": s.precision,
            "peak_flops_for_mfu": PEAK_FLOPS, "variants": variants}
    print(f"device {meta['device']}, torch {torch.__version__}, GPT {s.size} vocab {s.vocab}, "
          f"batch {s.batch}×{s.seq}, {s.precision}, compile {s.compile}, "
          f"{s.warmup} warmup + {s.steps} timed steps", flush=True)
    if s.cuda:
        meta["matmul_tflops_measured"] = matmul_peak() / 1e12
        print(f"measured bf16 matmul 8192^3: {meta['matmul_tflops_measured']:.0f} TFLOP/s", flush=True)

    ds_missing = deepspeed_importable() if {"raw_ds", "deepspeed"} & set(variants) else None
    data = TokenData(s)
    rows, notes = [], []
    for v in variants:
        note = None
        if v in ("raw_ds", "deepspeed") and ds_missing:
            note = f"{v}: skipped, deepspeed does not import ({ds_missing[:200]})"
        elif v == "deepspeed" and "deepspeed" not in BACKENDS:
            note = "deepspeed: skipped, tengine.backends.BACKENDS has no 'deepspeed' backend"
        if note:
            print(note, flush=True)
            notes.append(note)
            continue
        cleanup(s)
        mem_at_start = torch.cuda.memory_allocated() / 2**30 if s.cuda else None
        t = time.perf_counter()
        try:
            if v in ("raw", "raw_eagerloss"):
                r = run_raw(s, data, eager_loss=v == "raw_eagerloss")
            elif v == "raw_ds":
                r = run_raw_deepspeed(s, data)
            else:
                r = run_engine(s, data, v)
        except Exception as err:  # noqa: BLE001 — report and go on with the other variants
            tb = traceback.format_exc(limit=6)
            note = f"{v}: FAILED {type(err).__name__}: {str(err)[:300]}"
            print(note + "\n" + tb, flush=True)
            notes.append(note)
            continue
        r["variant_wall_s"] = time.perf_counter() - t
        r["mem_at_start_gib"] = mem_at_start  # left over from earlier variants (a leak shows here)
        rows.append(r)
        print(f"{v}: {r['tokens_per_s']:.0f} tok/s, {r['step_ms']:.1f} ms/step, MFU {r['mfu']:.1%}, "
              f"{r['variant_wall_s']:.0f} s in all", flush=True)
    cleanup(s)

    print_table(rows)
    for n in notes:
        print("note:", n)
    by = {r["variant"]: r for r in rows}
    ratio = (by["ddp"]["tokens_per_s"] / by["raw"]["tokens_per_s"]
             if "ddp" in by and "raw" in by else math.nan)
    ds_ratio = (by["deepspeed"]["tokens_per_s"] / by["raw_ds"]["tokens_per_s"]
                if "deepspeed" in by and "raw_ds" in by else math.nan)
    print(f"targets: engine(ddp)/raw {ratio:.3f} (≥ 0.98), engine(deepspeed)/raw_ds "
          f"{ds_ratio:.3f} (≥ 0.98)")
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "gpu_throughput.json"), "w") as fh:
            json.dump({"meta": meta, "rows": rows, "notes": notes,
                       "engine_vs_raw": None if math.isnan(ratio) else ratio,
                       "deepspeed_vs_raw_ds": None if math.isnan(ds_ratio) else ds_ratio},
                      fh, indent=1)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    print(f"engine_vs_raw={ratio:.4f}", flush=True)
    sys.stderr.flush()
    # nothing may print after the headline (library atexit hooks do): leave now
    os._exit(0 if not math.isnan(ratio) else 1)


if __name__ == "__main__":
    main()
