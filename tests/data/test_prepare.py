"""`tengine data prepare`: text/JSONL → token shards that the `tokens` source trains on."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from tengine.cli import main
from tengine.data import BPETokenizer
from tengine.data.prepare import PrepareOptions, prepare
from tests.conftest import REPO, TINY, read_jsonl

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "corpus"
    (root / "code").mkdir(parents=True)
    for name in ("bisect.py", "colorsys.py", "textwrap.py"):
        (root / "code" / name).write_text((STDLIB / name).read_text())
    rows = [{"text": f"record {i}: the quick brown fox " * (i % 7 + 1), "id": i} for i in range(300)]
    (root / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    return root


def _shards(out: Path, split: str) -> np.ndarray:
    dtype = json.loads((out / "meta.json").read_text())["dtype"]
    return np.concatenate([np.fromfile(p, dtype=dtype) for p in sorted(out.glob(f"{split}_*.bin"))])


def test_prepare_writes_byte_shards_that_decode_to_the_corpus_and_train(corpus, tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["data", "prepare", f"{corpus}/code/*.py", str(corpus / "docs.jsonl"),
                 "--out", str(out), "--shard-tokens", "20000", "--val-fraction", "0.1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("prepared ") and "from 303 documents in 4 files" in line, line
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["dtype"], meta["vocab_size"], meta["eos_id"], meta["tokenizer"]) == \
        ("uint16", 258, 256, "byte")
    expected = []
    for path in sorted((corpus / "code").glob("*.py")):
        expected += [*path.read_bytes(), 256]
    for raw in (corpus / "docs.jsonl").read_text().splitlines():
        if raw:
            expected += [*json.loads(raw)["text"].encode(), 256]
    train, val = _shards(out, "train"), _shards(out, "val")
    assert np.concatenate([train, val]).tolist() == expected  # every document, EOS after each
    assert len(val) == round(len(expected) * 0.1) and meta["val_tokens"] == len(val)
    assert len(meta["train_shards"]) == -(-len(train) // 20000) > 1
    assert all(v <= 20000 for v in meta["train_shards"].values())
    assert not (out / ".prepare-tmp").exists() and not (out / "tokenizer.json").exists()

    run_dir = tmp_path / "run"
    sets = [*TINY, "data.source=tokens", f"data.path={out}", "training.max_steps=6"]
    assert main(["train", str(REPO / "configs/quickstart.yaml"), "--run-dir", str(run_dir),
                 *[x for s in sets for x in ("--set", s)]]) == 0
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, 7))


def test_prepare_with_bpe_saves_its_tokenizer_and_the_run_keeps_a_copy(corpus, tmp_path, capsys):
    out = tmp_path / "bpe"
    meta = prepare([str(corpus / "code")], out, PrepareOptions(tokenizer="bpe", bpe_vocab_size=400,
                                                               val_fraction=0.05, progress=True))
    assert "tokenizing" in capsys.readouterr().err  # the progress bar, forced on
    tok = BPETokenizer.load(out / "tokenizer.json")
    assert meta["vocab_size"] == tok.vocab_size == 400 and meta["eos_id"] == tok.eos_id
    ids = np.concatenate([_shards(out, "train"), _shards(out, "val")]).tolist()
    first = (corpus / "code/bisect.py").read_text()
    assert ids[:len(tok.encode(first)) + 1] == [*tok.encode(first), tok.eos_id]
    run_dir = tmp_path / "run"
    sets = [*TINY, "data.source=tokens", f"data.path={out}/train_*.bin",
            f"data.val_path={out}/val_*.bin", "training.max_steps=4"]
    assert main(["train", str(REPO / "configs/quickstart.yaml"), "--run-dir", str(run_dir),
                 *[x for s in sets for x in ("--set", s)]]) == 0
    assert (run_dir / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()


def test_prepare_errors_exit_2_and_leave_nothing(corpus, tmp_path, capsys):
    def fails(*args: str) -> str:
        assert main(["data", "prepare", *args]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    out = tmp_path / "out"
    assert "no input file matches" in fails(f"{tmp_path}/nothing/*.txt", "--out", str(out))
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    assert f"{tmp_path}/bad.jsonl:2: not valid JSON" in fails(str(tmp_path / "bad.jsonl"),
                                                              "--out", str(out))
    assert "docs.jsonl:1: no field 'body' (keys: id, text); set --text-field" in fails(
        str(corpus / "docs.jsonl"), "--text-field", "body", "--out", str(out))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/a.txt").write_text("")
    (tmp_path / "empty/b.jsonl").write_text("\n")
    assert "the inputs hold no text" in fails(str(tmp_path / "empty"), "--out", str(out))
    assert not out.exists() or not any(out.iterdir())  # nothing half-written
    assert main(["data", "prepare", str(corpus / "code"), "--out", str(out)]) == 0
    assert "already holds token shards" in fails(str(corpus / "code"), "--out", str(out))
