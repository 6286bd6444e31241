"""Two CPU processes over gloo under torchrun: DDP matches one process, FSDP really shards,
and checkpoints resume on another world size (2→1, 1→2)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY

COMMON = [*TINY, "training.max_steps=30", "data.markov.num_tokens=40000",
          "training.eval_every_n_steps=0", "checkpoint.every_n_steps=10"]


def _sets(args: list[str]) -> list[str]:
    return [x for a in args for x in ("--set", a)]


def torchrun(nproc: int, run_dir: Path, *args: str, script: list[str] | None = None,
             timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += script or ["-m", "tengine", "train", str(REPO / "configs/quickstart.yaml"),
                      "--run-dir", str(run_dir), *_sets([*COMMON, *args])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def single(run_dir: Path, *args: str) -> None:
    from tengine.cli import main

    assert main(["train", str(REPO / "configs/quickstart.yaml"), "--run-dir", str(run_dir),
                 *_sets([*COMMON, *args])]) == 0


def step_losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["step_loss"] for r in map(json.loads, lines) if r["split"] == "train"}


def assert_close(a: dict, b: dict, tol: float) -> None:
    assert sorted(a) == sorted(b)
    worst = max(abs(a[s] - b[s]) for s in a)
    assert worst <= tol, f"max per-step difference {worst:.2e} > {tol}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One process, global batch 16: the curve the 2-process runs must reproduce."""
    run_dir = tmp_path_factory.mktemp("single") / "run"
    single(run_dir, "training.micro_batch_size=16")
    return run_dir


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    torchrun(2, run_dir, "distributed.backend=ddp", "training.micro_batch_size=8")
    return run_dir


def test_ddp_two_workers_match_one_process(reference, ddp_run):
    assert_close(step_losses(ddp_run), step_losses(reference), 1e-4)
    summary = json.loads((ddp_run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["backend"] == "ddp"
    argv = json.loads((ddp_run / "env.json").read_text())["argv"]  # the launch, as it was run
    assert argv[:5] == ["torchrun", "--nnodes=1", "--nproc_per_node=2", "-m", "tengine"], argv
    assert summary["tokens"] == json.loads((reference / "summary.json").read_text())["tokens"]


def test_fsdp_shards_parameters_and_optimizer_state(tmp_path, ddp_run):
    run_dir = tmp_path / "run"
    torchrun(2, run_dir, script=[str(REPO / "tests/backends/probe.py"), str(tmp_path), *COMMON,
                                 "distributed.backend=fsdp", "training.micro_batch_size=8",
                                 f"logging.root={tmp_path}", "name=run"])
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["world_size"] == 2 and r["status"] == "completed"
        assert 0.4 < r["params"] < 0.6 and 0.4 < r["optimizer"] < 0.6
    assert_close(step_losses(run_dir), step_losses(ddp_run), 1e-3)


@pytest.mark.parametrize("backend", ["ddp", "fsdp"])
def test_resume_on_another_world_size(tmp_path, reference, backend):
    two_to_one, one_to_two = tmp_path / "a", tmp_path / "b"
    torchrun(2, two_to_one, f"distributed.backend={backend}", "training.micro_batch_size=8",
             "training.halt_at_step=10")
    torchrun(1, two_to_one, f"distributed.backend={backend}", "training.micro_batch_size=16")
    torchrun(1, one_to_two, f"distributed.backend={backend}", "training.micro_batch_size=16",
             "training.halt_at_step=20")
    torchrun(2, one_to_two, f"distributed.backend={backend}", "training.micro_batch_size=8")
    for run_dir, resumed_at in ((two_to_one, 10), (one_to_two, 20)):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["resumed_from"].endswith(f"step_{resumed_at:08d}") and summary["steps"] == 30
        assert_close(step_losses(run_dir), step_losses(reference), 1e-4)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_shards_and_matches_ddp(tmp_path, ddp_run, stage):
    run_dir = tmp_path / "run"
    torchrun(2, run_dir, script=[str(REPO / "tests/backends/probe.py"), str(tmp_path), *COMMON,
                                 "distributed.backend=deepspeed", f"distributed.zero_stage={stage}",
                                 "training.micro_batch_size=8", f"logging.root={tmp_path}",
                                 "name=run", "training.halt_at_step=10"])
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert 0.4 < r["optimizer"] < 0.6  # ZeRO ≥ 1: optimizer state split
        assert (0.4 < r["params"] < 0.6) if stage == 3 else r["params"] == 1.0
    torchrun(2, run_dir, "distributed.backend=deepspeed", f"distributed.zero_stage={stage}",
             "training.micro_batch_size=8")  # resume from the step-10 checkpoint
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"].endswith("step_00000010") and summary["steps"] == 30
    assert_close(step_losses(run_dir), step_losses(ddp_run), 1e-3)


def test_deepspeed_optimizer_offload_runs_and_matches_ddp(tmp_path, ddp_run):
    """ZeRO-2 with the optimizer offloaded (DeepSpeed's CPU Adam, a C++ op built on first use
    and cached in ~/.cache/torch_extensions). On a CPU machine the state is on the CPU anyway:
    what this shows is that the offload path trains the same curve."""
    run_dir = tmp_path / "run"
    torchrun(2, run_dir, script=[str(REPO / "tests/backends/probe.py"), str(tmp_path), *COMMON,
                                 "distributed.backend=deepspeed", "distributed.zero_stage=2",
                                 "distributed.offload_optimizer=true", "training.micro_batch_size=8",
                                 f"logging.root={tmp_path}", "name=run"], timeout=600)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["cpu_offload"] is True and 0.4 < r["optimizer"] < 0.6 for r in ranks), ranks
    assert_close(step_losses(run_dir), step_losses(ddp_run), 1e-3)


@pytest.mark.parametrize("stage, first, then", [(2, 2, 1), (3, 1, 2)])
def test_deepspeed_resumes_on_another_world_size(tmp_path, ddp_run, stage, first, then):
    """Through DeepSpeed's universal checkpoint: fp32 weights and Adam moments are resharded."""
    run_dir = tmp_path / "run"
    ds = ["distributed.backend=deepspeed", f"distributed.zero_stage={stage}"]
    torchrun(first, run_dir, *ds, f"training.micro_batch_size={16 // first}", "training.halt_at_step=10")
    torchrun(then, run_dir, *ds, f"training.micro_batch_size={16 // then}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"].endswith("step_00000010") and summary["steps"] == 30
    assert summary["world_size"] == then
    assert_close(step_losses(run_dir), step_losses(ddp_run), 1e-3)
    assert not list((run_dir / "checkpoints").glob(".universal-*"))  # the conversion is removed
    if then == 2:  # `tengine evaluate` loads the 2-rank ZeRO-3 checkpoint into one process
        out = subprocess.run([sys.executable, "-m", "tengine", "evaluate", str(run_dir / "config.yaml"),
                              "--checkpoint", str(run_dir / "checkpoints/step_00000030"), "--json"],
                             capture_output=True, text=True, timeout=300, cwd=REPO)
        assert out.returncode == 0, out.stderr[-3000:]  # the same items as the run's 2 ranks
        assert abs(json.loads(out.stdout.splitlines()[-1])["val_loss"] - summary["val_loss"]) <= 1e-6


def test_deepspeed_json_may_add_but_not_contradict(tmp_path):
    from tengine.backends.deepspeed_config import deepspeed_config
    from tengine.config import load_config
    from tengine.errors import ConfigError

    extra = tmp_path / "ds.json"
    extra.write_text(json.dumps({"zero_optimization": {"reduce_bucket_size": 1000},
                                 "train_micro_batch_size_per_gpu": 8}))
    cfg = load_config(REPO / "configs/quickstart.yaml", [
        "distributed.backend=deepspeed", "distributed.zero_stage=2", f"distributed.deepspeed_config={extra}",
        "training.micro_batch_size=8", "training.grad_accum_steps=2"])
    merged = deepspeed_config(cfg, "bf16")
    assert merged["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 1000}
    assert merged["gradient_accumulation_steps"] == 2 and merged["bf16"] == {"enabled": True}
    with pytest.raises(ConfigError, match=r"train_micro_batch_size_per_gpu=8 but training.micro_batch_size gives 4"):
        deepspeed_config(cfg.model_copy(update={"training": cfg.training.model_copy(
            update={"micro_batch_size": 4})}), "bf16")


def test_ddp_is_the_exact_global_mean_when_ranks_hold_different_token_counts(tmp_path):
    import random

    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "train", "loss", "step"]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": " ".join(rng.choices(words, k=rng.randint(1, 8)))}) + "\n"
                            for _ in range(405)))  # 41 validation records: 21 + 20 per rank
    unpacked = ["data.source=jsonl", f"data.path={data}", "data.pack=false", "training.max_steps=12",
                "checkpoint.every_n_steps=0", "training.eval_batches=null"]  # the default: all
    single(tmp_path / "one", *unpacked, "training.micro_batch_size=16")
    torchrun(2, tmp_path / "two", *unpacked, "distributed.backend=ddp", "training.micro_batch_size=8")
    assert_close(step_losses(tmp_path / "two"), step_losses(tmp_path / "one"), 1e-4)
    # evaluation is exact and global: no item repeated to pad a rank, whatever the world size
    two = json.loads((tmp_path / "two/summary.json").read_text())
    out = subprocess.run([sys.executable, "-m", "tengine", "evaluate", str(tmp_path / "two/config.yaml"),
                          "--checkpoint", two["last_checkpoint"], "--json"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert abs(json.loads(out.stdout.splitlines()[-1])["val_loss"] - two["val_loss"]) <= 1e-6


POISONED = ["model.name=tests.engine.helpers:poisoned_gpt", "training.grad_accum_steps=2",
            "training.max_steps=16", "checkpoint.every_n_steps=0"]


@pytest.mark.parametrize("kind, offload", [("poison", False), ("poison", True), ("nan_grads", False)])
def test_deepspeed_skips_a_poisoned_step_exactly_like_one_process(tmp_path, kind, offload):
    """Forward 7 (the first micro-batch of step 4's window) returns NaN logits (`poison`), or a
    finite loss whose backward is NaN (`nan_grads`). ZeRO-2 must drop everything of that
    window (its reduced and offloaded gradient buffers too), skip the step, and go on: the
    curve is the one-process run's, which skips the same step."""
    poison = f'model.kwargs={{"{kind}": [7]}}'
    single(tmp_path / "one", *POISONED, poison, "training.micro_batch_size=16")
    torchrun(2, tmp_path / "ds", *POISONED, poison, "distributed.backend=deepspeed",
             "distributed.zero_stage=2", f"distributed.offload_optimizer={str(offload).lower()}",
             "training.micro_batch_size=8", timeout=600)
    one, ds = step_losses(tmp_path / "one"), step_losses(tmp_path / "ds")
    for run_dir in (tmp_path / "one", tmp_path / "ds"):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["skipped_steps"] == 1 and summary["status"] == "completed", summary
        assert math.isfinite(summary["val_loss"]), summary
    bad = {s for s, v in one.items() if v is None or not math.isfinite(v)}  # NaN is logged as null
    assert bad == {s for s, v in ds.items() if v is None or not math.isfinite(v)}
    assert bad == ({4} if kind == "poison" else set())
    assert_close({s: v for s, v in ds.items() if s not in bad},
                 {s: v for s, v in one.items() if s not in bad}, 1e-3)


# no dropout (GPT-2's default is 0.1): ranks draw their own masks, one process draws others
HF_GPT2 = ["model.name=hf", 'model.hf={"config": {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, '
           '"n_head": 2, "n_positions": 32, "resid_pdrop": 0, "embd_pdrop": 0, "attn_pdrop": 0}}',
           "training.max_steps=16", "checkpoint.every_n_steps=0"]


@pytest.fixture(scope="module")
def hf_reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("hf") / "one"
    single(run_dir, *HF_GPT2, "training.micro_batch_size=16")
    return run_dir


@pytest.mark.parametrize("backend", ["ddp", "fsdp", "zero2", "zero3"])
def test_an_hf_model_trains_the_same_curve_on_every_backend(tmp_path, hf_reference, backend):
    """HF GPT-2 on 2 gloo workers per backend = one process, per step; FSDP shards it by its
    `_no_split_modules` (GPT2Block). Then `model.init_from` the 2-rank checkpoint (each
    backend's own format) in one process, and pack it as the registry does (one consolidated
    safetensors file): the same weights give the run's own val_loss both ways."""
    sets = {"ddp": ["distributed.backend=ddp"], "fsdp": ["distributed.backend=fsdp"],
            "zero2": ["distributed.backend=deepspeed", "distributed.zero_stage=2"],
            "zero3": ["distributed.backend=deepspeed", "distributed.zero_stage=3"]}[backend]
    run_dir = tmp_path / "run"
    torchrun(2, run_dir, *HF_GPT2, *sets, "training.micro_batch_size=8")
    assert_close(step_losses(run_dir), step_losses(hf_reference), 1e-3)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["backend"] == sets[0].split("=")[1] and summary["world_size"] == 2

    # weights only, into one process; lr ~0 so the one step leaves them as they are
    single(tmp_path / "init", *HF_GPT2, "training.max_steps=1", "optim.lr=1e-12",
           f"model.init_from={summary['last_checkpoint']}",
           "training.micro_batch_size=8")  # eval_batches × 8: the items the run evaluated
    init = json.loads((tmp_path / "init/summary.json").read_text())
    assert init["resumed_from"] is None and init["steps"] == 1
    assert abs(init["val_loss"] - summary["val_loss"]) <= 1e-5, (init["val_loss"], summary["val_loss"])

    # what registering it copies: the weights consolidated to one safetensors file (tied ones
    # once), config and tokenizer; evaluated in one process, the run's own val_loss again
    from tengine.config import load_config
    from tengine.engine import evaluate
    from tengine.engine.artifact import pack

    info = pack(Path(summary["last_checkpoint"]), tmp_path / "artifacts")
    artifact = Path(info["artifact_uri"])
    assert info["step"] == summary["steps"] and not list(artifact.glob("optim*"))
    record = evaluate(load_config(artifact / "config.yaml"), artifact)
    assert abs(record["val_loss"] - summary["val_loss"]) <= 1e-5, (record["val_loss"], summary["val_loss"])


def test_ddp_find_unused_parameters_lets_a_model_with_an_idle_branch_train(tmp_path):
    branchy = ["model.name=tests.engine.helpers:branchy_gpt", "distributed.backend=ddp",
               "training.max_steps=4", "checkpoint.every_n_steps=0"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tengine", "train", str(REPO / "configs/quickstart.yaml"),
           "--run-dir", str(tmp_path / "off"), *_sets([*COMMON, *branchy])]
    off = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert off.returncode != 0 and "find_unused_parameters" in off.stderr
    torchrun(2, tmp_path / "on", *branchy, "distributed.find_unused_parameters=true")
    assert json.loads((tmp_path / "on/summary.json").read_text())["status"] == "completed"


def test_fsdp_shard_units_are_chosen_by_class_bottom_up():
    from tengine.backends.fsdp import shard_units
    from tengine.config.schema import ModelConfig
    from tengine.errors import ConfigError
    from tengine.models import build_model

    gpt = build_model(ModelConfig(n_layers=2), vocab_size=16, seq_len=8)
    assert [type(m).__name__ for m in shard_units(gpt)] == ["Block", "Block"]  # the ModuleList
    nested = shard_units(gpt, ["Block", "CausalSelfAttention"])
    assert [type(m).__name__ for m in nested] == ["CausalSelfAttention"] * 2 + ["Block"] * 2
    hf = build_model(ModelConfig(name="hf", hf={"config": {"model_type": "gpt2", "n_layer": 2,
                     "n_embd": 32, "n_head": 2, "n_positions": 8}}), vocab_size=16, seq_len=8)
    assert [type(m).__name__ for m in shard_units(hf)] == ["GPT2Block", "GPT2Block"]
    with pytest.raises(ConfigError, match=r"distributed.fsdp.wrap: no module of class Blok in GPT;"
                                          r" classes with parameters there: Block, "):
        shard_units(gpt, ["Blok"])


def test_max_time_stops_every_rank_at_the_same_step_and_resumes(tmp_path):
    """Each rank's clock runs out at its own moment; the stop rides the step's loss all-reduce,
    so both ranks checkpoint the same step (a rank that stopped alone would leave the other
    hanging in its next collective). torchrun reports the workers' exit 75 as a failure."""
    from tengine.engine.checkpoint import verify

    run_dir = tmp_path / "run"
    slow = ["model.name=tests.engine.helpers:slow_gpt", "distributed.backend=ddp",
            "training.micro_batch_size=8", "training.max_steps=400", "checkpoint.every_n_steps=0"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tengine", "train", str(REPO / "configs/quickstart.yaml"), "--run-dir", str(run_dir),
           *_sets([*COMMON, *slow, "training.max_time=4s"])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode != 0 and "exitcode  : 75" in proc.stderr, proc.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "preempted" and 0 < summary["steps"] < 400
    ckpt = Path(summary["last_checkpoint"])
    assert ckpt.name == f"step_{summary['steps']:08d}" and verify(ckpt) is None
    assert {"rng_rank0.pt", "rng_rank1.pt"} <= {p.name for p in ckpt.iterdir()}
    torchrun(2, run_dir, *slow, "training.max_steps=" + str(summary["steps"] + 5))
    done = json.loads((run_dir / "summary.json").read_text())
    assert done["status"] == "completed" and done["resumed_from"] == str(ckpt)
