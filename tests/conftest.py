"""Shared fixtures: tiny, fast configs on the synthetic Markov source."""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path

import pytest

os.environ.setdefault("CI", "true")  # no progress bars in test output
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here: fail at once instead of retrying
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.pop("RAY_ADDRESS", None)  # tests start (and stop) the Ray they use themselves

from tengine.config import load_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"])

# ~2 s runs in this process: 20k tokens, 32-token sequences, the tiny GPT.
TINY = [
    "distributed.workers=0", "distributed.backend=single",
    "data.seq_len=32", "data.markov.num_tokens=20000", "training.micro_batch_size=8",
    "training.log_every_n_steps=1", "training.eval_every_n_steps=0", "training.eval_batches=4",
    "checkpoint.every_n_steps=0", "logging.plots=false", "optim.lr=3e-3",
    "schedule.warmup_steps=5",
]


@pytest.fixture
def tiny_config(tmp_path):
    """tiny_config(*overrides) → a validated config whose run dir is under tmp_path."""

    def make(*overrides: str, name: str = "t"):
        return load_config(REPO / "configs/quickstart.yaml",
                           [*TINY, f"logging.root={tmp_path}", f"name={name}", *overrides])

    return make


def read_jsonl(path: Path, split: str = "train") -> list[dict]:
    return [r for line in path.read_text().splitlines() if (r := json.loads(line))["split"] == split]


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory) -> Path:
    """A byte-level BPE built with `tokenizers`, wrapped and saved by transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([(STDLIB / n).read_text() for n in ("bisect.py", "colorsys.py")],
                            trainer=trainers.BpeTrainer(
                                vocab_size=400, special_tokens=["<|endoftext|>", "<pad>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False))
    directory = tmp_path_factory.mktemp("hf") / "tok"
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                            pad_token="<pad>").save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL server for the whole test session (tests/pg.py); each test
    that wants one makes its own database (`postgres.new_database()`). Its directory is not
    under pytest's basetemp, which a concurrent pytest session may prune."""
    import shutil
    import tempfile

    from tests.pg import PostgresServer

    base = Path(tempfile.mkdtemp(prefix="tengine-pg-"))
    server = PostgresServer(base / "pg").start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_uri(request, tmp_path):
    """The control plane's conformance matrix: a fresh store on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/control/tengine.db"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def store(store_uri):
    from tengine.control import open_store

    opened = open_store(store_uri)
    yield opened
    opened.close()
