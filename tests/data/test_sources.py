"""Data sources, tokenizers, collators and the resumable sampler."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tengine.cli import main
from tengine.config import load_config
from tengine.config.schema import DataConfig, TaskConfig
from tengine.data import (
    BPETokenizer,
    ByteTokenizer,
    MarkovSource,
    ResumableSampler,
    build_collator,
    build_data,
)
from tengine.errors import DataError
from tests.conftest import REPO


def test_markov_entropy_rate_matches_the_empirical_nll():
    src = MarkovSource(vocab_size=8, order=2, concentration=0.5, seed=3)
    tokens = src.sample(200_000)
    nll = 0.0
    state = int(tokens[0]) * 8 + int(tokens[1])
    for t in tokens[2:]:
        nll -= math.log(src.transitions[state, t])
        state = (state * 8 + int(t)) % 64
    assert nll / (len(tokens) - 2) == pytest.approx(src.entropy_rate, rel=0.01)
    assert 0 < src.entropy_rate < math.log(8)


def test_markov_bundle_reports_its_floor_and_is_seeded():
    data = DataConfig(seq_len=16, markov={"num_tokens": 5000})
    a, b = build_data(data, TaskConfig()), build_data(data, TaskConfig())
    assert a.loss_floor == pytest.approx(MarkovSource(16, 2, 0.3, 1234).entropy_rate)
    assert torch.equal(a.train[3]["input_ids"], b.train[3]["input_ids"])
    item = a.train[0]
    assert torch.equal(item["input_ids"][1:], item["labels"][:-1])  # labels = inputs shifted


def test_text_files_default_is_the_standard_library():
    bundle = build_data(DataConfig(source="text_files", max_bytes=50_000, seq_len=64), TaskConfig())
    assert bundle.info["files"] >= 1 and bundle.vocab_size == 258
    text = ByteTokenizer().decode(bundle.train[0]["input_ids"].tolist())
    assert text.isprintable() or "\n" in text


def test_missing_data_files_fail_before_work(tmp_path, capsys):
    quick = str(REPO / "configs/quickstart.yaml")
    for sets, field in ((["data.source=text_files", f"data.path={tmp_path}/nothing/*.txt"], "data.path"),
                        (["data.source=jsonl", f"data.path={tmp_path}/absent.jsonl"], "data.path"),
                        (["data.source=text_files", f"data.val_path={tmp_path}/v/*.py"], "data.val_path")):
        args = [x for s in sets for x in ("--set", s)]
        assert main(["train", quick, "--run-dir", str(tmp_path / "r"), *args]) == 2
        err = capsys.readouterr().err
        assert f"{field}: no file matches" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_jsonl_language_modeling_and_classification(tmp_path):
    rows = [{"text": f"sample number {i} " * 5, "label": ["neg", "pos"][i % 2]} for i in range(40)]
    _write_jsonl(tmp_path / "d.jsonl", rows)
    lm = build_data(DataConfig(source="jsonl", path=str(tmp_path / "d.jsonl"), seq_len=32), TaskConfig())
    assert len(lm.train) > 0 and len(lm.val) > 0
    cls = build_data(DataConfig(source="jsonl", path=str(tmp_path / "d.jsonl"), seq_len=32),
                     TaskConfig(type="classification"))
    assert cls.num_classes == 2 and cls.info["labels"] == ["neg", "pos"]
    assert {cls.train[i]["labels"] for i in range(len(cls.train))} == {0, 1}


def test_jsonl_errors_name_the_line_and_field(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match="bad.jsonl:2: not valid JSON"):
        build_data(DataConfig(source="jsonl", path=str(tmp_path / "bad.jsonl")), TaskConfig())
    _write_jsonl(tmp_path / "nofield.jsonl", [{"body": "x"}])
    with pytest.raises(DataError, match="no field 'text'.*keys: body.*data.text_field"):
        build_data(DataConfig(source="jsonl", path=str(tmp_path / "nofield.jsonl")), TaskConfig())


def test_hf_source_reads_local_files(tmp_path):
    _write_jsonl(tmp_path / "hf.jsonl", [{"text": "hello world, " * 20} for _ in range(30)])
    bundle = build_data(DataConfig(source="hf", path=str(tmp_path / "hf.jsonl"), seq_len=32),
                        TaskConfig())
    assert len(bundle.train) > 0
    with pytest.raises(DataError, match="cannot load HF dataset"):
        build_data(DataConfig(source="hf", path="surely-not-a-local/dataset-name"), TaskConfig())


def test_bpe_tokenizer_trains_locally_and_round_trips():
    texts = ["def train(model, data):\n    return model.fit(data)\n"] * 50
    tok = BPETokenizer(texts, vocab_size=300)
    ids = tok.encode(texts[0])
    assert tok.decode(ids) == texts[0] and len(ids) < len(texts[0].encode())
    assert tok.eos_id is not None and tok.pad_id is not None


def test_unpacked_lm_pads_labels_with_ignore_index():
    collate = build_collator(None, "language_modeling", pad_id=257)
    batch = collate([{"input_ids": torch.tensor([1, 2, 3]), "labels": torch.tensor([2, 3, 4])},
                     {"input_ids": torch.tensor([5]), "labels": torch.tensor([6])}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [5, 257, 257]]
    assert batch["labels"].tolist() == [[2, 3, 4], [6, -100, -100]]


def test_sampler_reshuffles_resumes_and_splits_ranks():
    def order(epoch, start=0, rank=0, world=1):
        s = ResumableSampler(100, shuffle=True, seed=1, rank=rank, world_size=world,
                             drop_last=True, batch_size=8)
        s.set_epoch(epoch, start)
        return list(s)

    assert order(0) != order(1)  # reshuffled per epoch
    assert order(0) == order(0)  # a pure function of (seed, epoch)
    assert order(1, start=3) == order(1)[24:]  # resume skips consumed batches
    r0, r1 = order(0, rank=0, world=2), order(0, rank=1, world=2)
    assert not set(r0) & set(r1) and len(r0) == len(r1) == 48


def test_empty_split_is_a_data_error(tiny_config):
    cfg = tiny_config("data.markov.num_tokens=100", "data.seq_len=64")
    with pytest.raises(DataError, match="split .* is empty"):
        build_data(cfg.data, cfg.task)


def test_synthetic_classification_sets_are_learnable_shapes():
    imgs = build_data(DataConfig(source="synthetic_images", num_samples=64, image_size=8),
                      TaskConfig(type="vision_classification", num_classes=3))
    assert imgs.train[0]["pixel_values"].shape == (3, 8, 8) and imgs.num_classes == 3
    seqs = build_data(DataConfig(source="synthetic_classification", num_samples=64, seq_len=16),
                      TaskConfig(type="classification", num_classes=5))
    assert len(seqs.train[0]["input_ids"]) == 16 and seqs.num_classes == 5
    assert np.unique([seqs.train[i]["labels"] for i in range(len(seqs.train))]).size == 5


def test_quickstart_config_is_valid():
    cfg = load_config(REPO / "configs/quickstart.yaml")
    assert cfg.data.source == "synthetic_markov" and cfg.training.max_steps == 1000


def test_collators_stack_mask_and_multi_hot_labels():
    vision = build_collator(None, "segmentation", pad_id=0)
    batch = vision([{"pixel_values": torch.zeros(3, 4, 4), "labels": torch.zeros(4, 4, dtype=torch.long)}] * 2)
    assert batch["labels"].shape == (2, 4, 4)
    multi = build_collator(None, "multilabel", pad_id=0)
    batch = multi([{"input_ids": torch.tensor([1, 2]), "labels": torch.tensor([1.0, 0.0, 1.0])}] * 3)
    assert batch["labels"].shape == (3, 3)


def test_hf_source_uses_a_separate_validation_file(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", [{"text": "train text " * 30} for _ in range(20)])
    _write_jsonl(tmp_path / "val.jsonl", [{"text": "VALIDATION " * 30} for _ in range(5)])
    bundle = build_data(DataConfig(source="hf", path=str(tmp_path / "train.jsonl"),
                                   val_path=str(tmp_path / "val.jsonl"), seq_len=32), TaskConfig())
    assert "VALIDATION" in ByteTokenizer().decode(bundle.val[0]["input_ids"].tolist())


def test_max_bytes_is_off_by_default_and_a_cut_says_what_it_kept(tmp_path, caplog):
    (tmp_path / "big.txt").write_bytes(b"x = 1\n" * 500_000)  # 3 MB: past the old 2 MB cap
    (tmp_path / "small.txt").write_text("y = 2\n")
    whole = build_data(DataConfig(source="text_files", path=str(tmp_path / "*.txt"), seq_len=64),
                       TaskConfig())
    assert whole.info["tokens"] == 3_000_000 + 6 + 2  # every byte, an end-of-document per file
    assert "max_bytes" not in caplog.text
    cut = build_data(DataConfig(source="text_files", path=str(tmp_path / "*.txt"), seq_len=64,
                                max_bytes=100_000), TaskConfig())
    assert cut.info["tokens"] == 100_000 + 1 and cut.info["files"] == 1
    assert "data.max_bytes 100000 cut data.path" in caplog.text
    assert "kept 0.1 MB of 3.0 MB (3.3%; 1 of 2 files)" in caplog.text
    _write_jsonl(tmp_path / "d.jsonl", [{"text": "a record " * 20}] * 100)
    caplog.clear()
    build_data(DataConfig(source="jsonl", path=str(tmp_path / "d.jsonl"), max_bytes=2_000,
                          seq_len=16), TaskConfig())
    assert "cut data.path" in caplog.text and "records, lines 1-" in caplog.text
