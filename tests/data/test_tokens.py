"""The `tokens` source: memory-mapped shards bigger than memory, split over ranks, resumable."""

from __future__ import annotations

import json
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tengine.cli import main
from tengine.config.schema import DataConfig, TaskConfig
from tengine.data import DataLoaderFactory, build_collator, build_data
from tengine.errors import DataError
from tests.backends.test_distributed import torchrun
from tests.conftest import REPO, TINY, read_jsonl

VOCAB, SHARDS, SHARD_TOKENS = 512, 4, 25_000_000  # 100M uint16 tokens, 200 MB on disk


def write_walk_shards(directory: Path, seed: int = 0) -> Path:
    """A learnable stream: each token is the previous one plus 1, 2 or 3 (mod VOCAB), so the
    best loss is ln 3 ≈ 1.10 against ln 512 ≈ 6.24 for a uniform guess. Written 5M at a time."""
    directory.mkdir(parents=True)
    rng, last = np.random.default_rng(seed), 0
    for s in range(SHARDS):
        with (directory / f"train_{s:06d}.bin").open("wb") as fh:
            for _ in range(SHARD_TOKENS // 5_000_000):
                walk = (last + np.cumsum(rng.integers(1, 4, 5_000_000))) % VOCAB
                fh.write(walk.astype(np.uint16).tobytes())
                last = int(walk[-1])
    (directory / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": VOCAB}))
    return directory


@pytest.fixture(scope="module")
def walk(tmp_path_factory) -> Path:
    return write_walk_shards(tmp_path_factory.mktemp("walk") / "shards")


STEPS = 16


def _args(shards: Path, *extra: str) -> list[str]:
    return [*TINY, "data.source=tokens", f"data.path={shards}", "data.val_fraction=0.001",
            f"training.max_steps={STEPS}", "training.grad_accum_steps=2", "model.dropout=0.1",
            "checkpoint.every_n_steps=4", *extra]


def _train(run_dir: Path, shards: Path, *extra: str) -> int:
    sets = [x for a in _args(shards, *extra) for x in ("--set", a)]
    return main(["train", str(REPO / "configs/quickstart.yaml"), "--run-dir", str(run_dir), *sets])


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["step_loss"] for r in read_jsonl(run_dir / "metrics.jsonl")}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_100m_token_shards_train_in_flat_memory_and_resume_on_the_same_curve(walk, tmp_path):
    """RSS is measured over a whole run (data building included) after a 2-step warm-up run,
    so the engine's one-time start-up (~100 MB: torch's kernels, autograd, AdamW) is not counted
    as the data's. Loading the corpus as int64 would cost 800 MB; a Python list of the epoch's
    3.1M block indices about 150 MB."""
    from tengine.config import load_config
    from tengine.engine import run

    run(load_config(REPO / "configs/quickstart.yaml",  # warm-up on the Markov source
                    [*TINY, "training.max_steps=2", f"logging.root={tmp_path}", "name=warm"]))
    cfg = load_config(REPO / "configs/quickstart.yaml",
                      [*_args(walk), f"logging.root={tmp_path}", "name=straight"])
    peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.005)

    before = _rss_mb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        summary = run(cfg)  # data building included: the shards are opened, never loaded
    finally:
        done.set()
        sampler.join()
    growth = max(peak[0], _rss_mb()) - before
    assert summary["status"] == "completed" and summary["steps"] == STEPS
    assert growth < 200, f"resident memory grew by {growth:.0f} MB over a 200 MB corpus"
    losses = _losses(tmp_path / "straight")
    assert np.mean([losses[s] for s in range(STEPS - 3, STEPS + 1)]) < losses[1] - 0.5  # learns

    broken = tmp_path / "broken"
    assert _train(broken, walk, f"training.halt_at_step={STEPS // 2}") == 0
    assert json.loads((broken / "summary.json").read_text())["status"] == "halted"
    assert _train(broken, walk, "checkpoint.resume=auto") == 0
    resumed = _losses(broken)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    worst = max(abs(losses[s] - resumed[s]) for s in losses)
    assert worst <= 1e-6, f"resumed run left the uninterrupted curve by {worst:.2e}"


def test_two_torchrun_ranks_on_token_shards_match_one_process(walk, tmp_path):
    """2 ranks × micro-batch 8 read the blocks one process reads with micro-batch 16."""
    common = _args(walk, "training.max_steps=12", "checkpoint.every_n_steps=0",
                   "model.dropout=0.0")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", str(REPO / "configs/quickstart.yaml"), "--run-dir", str(one),
                 *[x for a in [*common, "training.micro_batch_size=16"] for x in ("--set", a)]]) == 0
    script = ["-m", "tengine", "train", str(REPO / "configs/quickstart.yaml"), "--run-dir", str(two),
              *[x for a in [*common, "distributed.backend=ddp", "training.micro_batch_size=8"]
                for x in ("--set", a)]]
    torchrun(2, two, script=script)
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == list(range(1, 13))
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-4


def _position_shards(directory: Path, lengths: list[int], suffix: str = ".bin") -> None:
    """Shard k holds ids k·10⁶ + position: an item's ids say exactly where they came from."""
    directory.mkdir(parents=True, exist_ok=True)
    for k, n in enumerate(lengths):
        ids = (k * 1_000_000 + np.arange(n)).astype(np.uint32)
        if suffix == ".npy":
            np.save(directory / f"train_{k:06d}.npy", ids)
        else:
            ids.tofile(directory / f"train_{k:06d}.bin")


def test_two_ranks_read_disjoint_positions_that_cover_the_epoch(tmp_path):
    _position_shards(tmp_path / "pos", [10_001, 7_500, 5_003])
    data = DataConfig(source="tokens", path=str(tmp_path / "pos"), token_dtype="uint32", seq_len=16,
                      val_fraction=0.05)
    bundle = build_data(data, TaskConfig())
    train, collate = bundle.train, build_collator(None, "language_modeling", pad_id=0)
    blocks = 10_000 // 16 + 7_499 // 16 + 5_002 // 16  # no block crosses a shard boundary
    assert len(train) + len(bundle.val) == blocks and bundle.vocab_size is None

    def read(rank: int, start_batch: int = 0) -> list[int]:
        loader = DataLoaderFactory(micro_batch_size=8, collate=collate, seed=5, rank=rank,
                                   world_size=2).train(train)
        loader.sampler.set_epoch(1, start_batch)
        starts = []
        for batch in loader:
            ids = batch["input_ids"]
            assert torch.equal(ids, ids[:, :1] + torch.arange(16))  # contiguous, one shard
            assert torch.equal(batch["labels"], ids + 1)
            starts += ids[:, 0].tolist()
        return starts

    r0, r1 = read(0), read(1)
    per_rank = (len(train) // 2) // 8 * 8
    assert len(r0) == len(r1) == per_rank and not set(r0) & set(r1)
    every = {k * 1_000_000 + b * 16 for k, n in enumerate([10_001, 7_500, 5_003])
             for b in range((n - 1) // 16)}
    assert set(r0) | set(r1) <= every and len(every) - len(set(r0) | set(r1)) < len(bundle.val) + 2 * 8
    assert read(1, start_batch=3) == r1[3 * 8:]  # resume mid-epoch: the same next positions
    val_starts = {int(bundle.val[i]["input_ids"][0]) for i in range(len(bundle.val))}
    assert not val_starts & (set(r0) | set(r1))  # the held-out tail is never trained on
    clone = pickle.loads(pickle.dumps(train))  # DataLoader workers get it without its maps
    assert torch.equal(clone[7]["input_ids"], train[7]["input_ids"])


def test_npy_shards_meta_dtype_and_clear_errors(tmp_path):
    _position_shards(tmp_path / "npy", [3_000, 2_000], suffix=".npy")
    bundle = build_data(DataConfig(source="tokens", path=str(tmp_path / "npy/*.npy"), seq_len=32),
                        TaskConfig())  # dtype and length from the .npy headers
    assert int(bundle.train[0]["input_ids"][1]) == 1 and bundle.train[0]["input_ids"].dtype == torch.int64

    _position_shards(tmp_path / "raw", [3_000])
    with pytest.raises(DataError, match="data.token_dtype: .* no meta.json.*uint16 or uint32"):
        build_data(DataConfig(source="tokens", path=str(tmp_path / "raw")), TaskConfig())
    (tmp_path / "raw/meta.json").write_text(json.dumps({"dtype": "uint32", "vocab_size": 9}))
    assert build_data(DataConfig(source="tokens", path=str(tmp_path / "raw")),
                      TaskConfig()).vocab_size == 9
    with pytest.raises(DataError, match="data.token_dtype is uint16 but .*meta.json says .*uint32"):
        build_data(DataConfig(source="tokens", path=str(tmp_path / "raw"), token_dtype="uint16"),
                   TaskConfig())
    with pytest.raises(DataError, match="data.path: no .bin/.npy token shards match"):
        build_data(DataConfig(source="tokens", path=str(tmp_path / "none/*.bin")), TaskConfig())


def test_tokens_source_preflight_names_the_fields(tmp_path, capsys):
    args = ["--set", "data.source=tokens", "--set", f"data.path={tmp_path}/nothing/*.bin"]
    assert main(["config", "validate", str(REPO / "configs/quickstart.yaml"), *args]) == 2
    err = capsys.readouterr().err
    assert "data.path: no .bin/.npy token shards match" in err and "Traceback" not in err
    _position_shards(tmp_path / "raw", [3_000])  # no meta.json, no vocab: the model says so
    args = ["--set", "data.source=tokens", "--set", f"data.path={tmp_path}/raw",
            "--set", "data.token_dtype=uint32", "--set", "distributed.workers=0",
            "--set", "distributed.backend=single", "--run-dir", str(tmp_path / "r")]
    assert main(["train", str(REPO / "configs/quickstart.yaml"), *args]) == 2
    assert "model.vocab_size" in capsys.readouterr().err


def test_sampler_streams_an_epoch_without_a_list_of_it():
    """3M blocks: the first index comes without building the epoch as Python ints (~110 MB)."""
    import tracemalloc

    from tengine.data import ResumableSampler

    sampler = ResumableSampler(3_000_000, shuffle=True, seed=0, rank=1, world_size=2,
                               drop_last=True, batch_size=8)
    tracemalloc.start()
    try:
        first = next(iter(sampler))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0 <= first < 3_000_000 and peak < 8 << 20, f"{peak / 2**20:.0f} MB of Python objects"
