"""Tokenizers a run keeps: the BPE trained once and reused by resume and evaluate; a local HF one."""

from __future__ import annotations

import json
import logging
import sysconfig
import threading
from pathlib import Path

import numpy as np
import pytest

from tengine.cli import main
from tengine.config.schema import DataConfig, TaskConfig
from tengine.data import BPETokenizer, DataContext, build_data
from tengine.data.tokenizers import build_tokenizer, load_hf_tokenizer, load_saved
from tengine.errors import DataError
from tests.conftest import REPO, TINY, read_jsonl

STDLIB = Path(sysconfig.get_paths()["stdlib"])
BPE = ["data.source=text_files", "data.tokenizer=bpe", "data.bpe_vocab_size=20000",
       "training.max_steps=12", "checkpoint.every_n_steps=6"]


def _train(run_dir: Path, *args: str) -> int:
    sets = [x for a in [*TINY, *args] for x in ("--set", a)]
    return main(["train", str(REPO / "configs/quickstart.yaml"), "--run-dir", str(run_dir), *sets])


def test_a_resumed_bpe_run_keeps_its_tokenizer_when_the_corpus_grows(tmp_path, caplog):
    """bpe_vocab_size is out of reach of this small corpus, so the vocabulary a BPE learns grows
    with the corpus: a tokenizer trained again after a file is added would not even fit the
    checkpoint's embedding, and the resume and the evaluation below would fail."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("bisect.py", "colorsys.py"):
        (corpus / name).write_text((STDLIB / name).read_text())
    run_dir = tmp_path / "run"
    sets = [*BPE, f"data.path={corpus}/*.py"]
    assert _train(run_dir, *sets, "training.halt_at_step=6") == 0
    saved = (run_dir / "tokenizer.json").read_bytes()
    first = BPETokenizer.load(run_dir / "tokenizer.json")

    (corpus / "textwrap.py").write_text((STDLIB / "textwrap.py").read_text())  # the glob grows
    texts = [p.read_text() for p in sorted(corpus.glob("*.py"))]
    retrained = BPETokenizer(texts, 20000)
    assert retrained.vocab_size != first.vocab_size  # what a retrain would have done
    with caplog.at_level(logging.INFO, logger="tengine"):
        assert _train(run_dir, *sets, "checkpoint.resume=auto") == 0
    assert "using the tokenizer saved in" in caplog.text
    assert (run_dir / "tokenizer.json").read_bytes() == saved
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert steps == list(range(1, 13))

    cfg_sets = [x for a in sets for x in ("--set", a)]
    assert main(["evaluate", str(run_dir / "config.yaml"), *cfg_sets, "--checkpoint",
                 str(run_dir / "checkpoints/step_00000012"), "--json"]) == 0
    resumed = build_data(DataConfig(source="text_files", path=f"{corpus}/*.py", tokenizer="bpe",
                                    bpe_vocab_size=20000, seq_len=32),
                         TaskConfig(), DataContext(saved=run_dir))
    assert resumed.vocab_size == first.vocab_size
    assert resumed.tokenizer.encode(texts[-1]) == first.encode(texts[-1]) \
        != retrained.encode(texts[-1])


def test_a_fresh_start_after_every_checkpoint_failed_keeps_the_tokenizer_it_used(tmp_path):
    """resume auto found checkpoints, so the data was built with the saved tokenizer; every
    one then fails its hashes, the Trainer starts fresh and moves the old run aside: the new
    run keeps the tokenizer.json its ids came from."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "bisect.py").write_text((STDLIB / "bisect.py").read_text())
    run_dir = tmp_path / "run"
    sets = [*BPE, f"data.path={corpus}/*.py", "training.max_steps=6"]
    assert _train(run_dir, *sets) == 0
    saved = (run_dir / "tokenizer.json").read_bytes()
    for ckpt in (run_dir / "checkpoints").iterdir():
        (ckpt / "model.safetensors").write_bytes(b"corrupted")
    assert _train(run_dir, *sets, "training.max_steps=8") == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"] is None and summary["steps"] == 8  # a fresh start
    assert (run_dir / "tokenizer.json").read_bytes() == saved
    assert len(list(tmp_path.glob("run-*"))) == 1  # the earlier run, moved aside whole
    assert (next(tmp_path.glob("run-*")) / "tokenizer.json").read_bytes() == saved


def test_rank_0_trains_the_bpe_and_the_other_ranks_load_it(tmp_path):
    data = DataConfig(tokenizer="bpe", bpe_vocab_size=300)
    texts = [(STDLIB / "bisect.py").read_text()]

    def ranks(run_dir: Path) -> list:
        box, barrier, results = {}, threading.Barrier(2), [None, None]

        def rank(r: int) -> None:
            def broadcast(obj):
                if r == 0:
                    box["obj"] = obj
                barrier.wait()
                return box["obj"]

            ctx = DataContext(run_dir=run_dir, is_main=r == 0, broadcast=broadcast)
            try:
                results[r] = build_tokenizer(data, texts if r == 0 else [], ctx)
            except DataError as err:
                results[r] = err

        threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        return results

    zero, one = ranks(tmp_path / "run")
    assert one.encode(texts[0]) == zero.encode(texts[0])  # rank 1 never saw the texts
    assert (tmp_path / "run/tokenizer.json").is_file()
    (tmp_path / "file").write_text("not a directory")
    zero, one = ranks(tmp_path / "file")  # rank 0 cannot save: both ranks fail, none hangs
    assert isinstance(zero, DataError) and isinstance(one, DataError)
    assert "training failed on rank 0" in str(one)


def test_an_hf_tokenizer_directory_trains_a_tiny_gpt(hf_dir, tmp_path):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(hf_dir))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("bisect.py", "colorsys.py", "textwrap.py"):
        (corpus / name).write_text((STDLIB / name).read_text())
    run_dir = tmp_path / "run"
    assert _train(run_dir, "data.source=text_files", f"data.path={corpus}/*.py",
                  "data.tokenizer=hf", f"data.tokenizer_path={hf_dir}", "training.max_steps=30",
                  "checkpoint.every_n_steps=30") == 0
    losses = [r["step_loss"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in run_dir.iterdir()}
    copy = AutoTokenizer.from_pretrained(str(run_dir))  # exports can load the run's copy
    text = (corpus / "textwrap.py").read_text()
    assert copy(text)["input_ids"] == reference(text)["input_ids"]
    kept = load_saved(DataConfig(tokenizer="hf", tokenizer_path=str(hf_dir)), run_dir)
    assert kept.encode(text) == reference(text)["input_ids"]  # what resume and evaluate load
    bundle = build_data(DataConfig(source="text_files", path=f"{corpus}/*.py", tokenizer="hf",
                                   tokenizer_path=str(hf_dir), seq_len=32), TaskConfig())
    assert bundle.vocab_size == len(reference) and bundle.pad_id == reference.pad_token_id
    first = reference(sorted(corpus.glob("*.py"))[0].read_text())["input_ids"]
    ids = bundle.train[0]["input_ids"].tolist() + [bundle.train[0]["labels"][-1].item()]
    assert ids == first[:33]

    from tengine.data.prepare import PrepareOptions, prepare  # the same tokenizer for shards

    meta = prepare([f"{corpus}/*.py"], tmp_path / "shards",
                   PrepareOptions(tokenizer="hf", tokenizer_path=str(hf_dir)))
    assert (meta["vocab_size"], meta["eos_id"]) == (len(reference), reference.eos_token_id)
    shard = np.fromfile(tmp_path / "shards/train_000000.bin", dtype=meta["dtype"])
    assert shard[:len(first) + 1].tolist() == [*first, reference.eos_token_id]
    assert (tmp_path / "shards/tokenizer_config.json").is_file()


def test_a_bare_tokenizer_json_and_clear_errors(hf_dir, tmp_path, capsys):
    from tokenizers import Tokenizer

    tok = load_hf_tokenizer(hf_dir / "tokenizer.json", None)  # a known eos name: found
    assert tok.eos_id == Tokenizer.from_file(str(hf_dir / "tokenizer.json")).token_to_id("<|endoftext|>")
    bare = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    bare.add_special_tokens(["<end>"])
    vocab = bare.get_vocab()
    plain = json.loads(bare.to_str())
    plain["added_tokens"] = [t for t in plain["added_tokens"] if t["content"] == "<end>"]
    plain["model"]["vocab"] = {k: v for k, v in vocab.items() if k not in ("<|endoftext|>", "<pad>")}
    (tmp_path / "noeos.json").write_text(json.dumps(plain))
    with pytest.raises(DataError, match="data.eos_token: .* names no end-of-document token.*<end>"):
        load_hf_tokenizer(tmp_path / "noeos.json", None)
    assert load_hf_tokenizer(tmp_path / "noeos.json", "<end>").eos_id == vocab["<end>"]

    quick = str(REPO / "configs/quickstart.yaml")
    assert main(["config", "validate", quick, "--set", "data.tokenizer=hf"]) == 2
    assert "data.tokenizer 'hf' needs data.tokenizer_path" in capsys.readouterr().err
    assert main(["config", "validate", quick, "--set", "data.source=text_files", "--set",
                 "data.tokenizer=hf", "--set", f"data.tokenizer_path={tmp_path}/absent"]) == 2
    err = capsys.readouterr().err
    assert f"data.tokenizer_path: '{tmp_path}/absent' does not exist" in err and "Traceback" not in err
