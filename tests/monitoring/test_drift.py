"""Drift on profiles: a different Markov source alerts, the same source stays ok (a false-alarm
rate ≤ 1 % over 200 seeded batches), a handful of rows is `insufficient`, and image and label
shifts are seen."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tengine.data.datasets import ClassificationDataset, ImageDataset, PackedLMDataset
from tengine.data.markov import MarkovSource
from tengine.monitoring import DriftSettings, compare, data_profile
from tengine.monitoring.drift import merge_bins

SEQ = 64


def _stream(source: MarkovSource, n: int, offset: int = 0) -> PackedLMDataset:
    return PackedLMDataset(torch.from_numpy(source.sample(n, seed_offset=offset)), SEQ)


@pytest.fixture(scope="module")
def reference():
    src = MarkovSource(16, 2, 0.3, seed=1234)
    return src, data_profile(_stream(src, 200_000), vocab_size=16)


def test_a_different_markov_source_alerts_on_token_order(reference):
    src, ref = reference
    shifted = MarkovSource(16, 2, 0.3, seed=99)  # the same symbols, other transitions
    report = compare(ref, data_profile(_stream(shifted, 8192), vocab_size=16, like=ref))
    rows = {r["feature"]: r for r in report["features"]}
    assert report["status"] == "alert"
    assert rows["bigrams"]["status"] == "alert" and rows["bigrams"]["value"] >= 0.2
    assert rows["bigrams"]["base"] == 2 and rows["bigrams"]["psi_eps"] == 1e-4
    assert rows["tokens"]["value"] < rows["bigrams"]["value"]  # unigrams barely move


def test_unshifted_batches_raise_no_alert_in_200_seeded_draws(reference):
    src, ref = reference
    statuses = [compare(ref, data_profile(_stream(src, 8192, offset=i + 1), vocab_size=16,
                                          like=ref))["status"] for i in range(200)]
    alerts = statuses.count("alert")
    assert alerts / len(statuses) <= 0.01, statuses
    assert statuses.count("ok") >= 190


def test_eight_rows_are_insufficient_never_an_alert(reference):
    _, ref = reference
    tiny = data_profile(_stream(MarkovSource(16, 2, 0.3, seed=5), 8 * SEQ + 1), vocab_size=16,
                        like=ref)
    assert tiny["examples"] == 8
    report = compare(ref, tiny)
    assert report["status"] == "insufficient"
    assert all(r["status"] == "insufficient" for r in report["features"])


def test_bins_merge_until_each_expects_enough_samples():
    ref = np.array([50, 30, 10, 5, 3, 1, 1], float)
    cur = np.array([40, 35, 12, 6, 4, 2, 1], float)
    r, c = merge_bins(ref, cur, 3, ordered=False)  # the two largest kept, the rest merged
    assert r.tolist() == [50, 30, 20] and c.tolist() == [40, 35, 25]
    r, c = merge_bins(ref, cur, 3, ordered=True)  # neighbours merged, mass conserved
    assert r.sum() == ref.sum() and c.sum() == cur.sum() and len(r) <= 3
    report = compare(*_token_profiles(4000))
    tokens = next(x for x in report["features"] if x["feature"] == "tokens")
    assert tokens["bins"] <= 4000 // DriftSettings().min_per_bin + 2


def _token_profiles(n_tokens: int):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(512, 0.5))
    ref = data_profile(PackedLMDataset(torch.from_numpy(rng.choice(512, 400_000, p=p)), 32),
                       vocab_size=512)
    cur = data_profile(PackedLMDataset(torch.from_numpy(rng.choice(512, n_tokens, p=p)), 32),
                       vocab_size=512, like=ref)
    return ref, cur


def test_unshifted_tokens_of_a_large_vocabulary_stay_ok_on_few_tokens():
    # 256 bins on 4k tokens would read JS ≈ 0.1 from sampling noise alone; merged, it is ok
    ref, cur = _token_profiles(4000)
    report = compare(ref, cur)
    assert report["status"] == "ok", report["features"]
    unmerged = DriftSettings(min_per_bin=1)  # every one of the 258 bins: noise reads as drift
    tokens = next(x for x in compare(ref, cur, unmerged)["features"] if x["feature"] == "tokens")
    assert tokens["bins"] > 250 and tokens["value"] > 0.1


def test_brighter_images_alert_and_the_same_images_do_not():
    g = torch.Generator().manual_seed(0)
    ref_images = torch.rand(2000, 3, 8, 8, generator=g)
    ref = data_profile(ImageDataset(ref_images, torch.zeros(2000, dtype=torch.long)))
    same = data_profile(ImageDataset(torch.rand(500, 3, 8, 8, generator=g),
                                     torch.zeros(500, dtype=torch.long)), like=ref)
    brighter = data_profile(ImageDataset((torch.rand(500, 3, 8, 8, generator=g) + 0.15).clamp(0, 1),
                                         torch.zeros(500, dtype=torch.long)), like=ref)
    assert compare(ref, same)["status"] == "ok"
    report = compare(ref, brighter)
    rows = {r["feature"]: r for r in report["features"]}
    assert report["status"] == "alert"
    assert rows["brightness"]["status"] == "alert" and rows["channels"]["status"] == "alert"


def test_a_label_shift_in_classification_data_alerts():
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, 50, 20).tolist() for _ in range(3000)]

    def profile(labels, like=None):
        return data_profile(ClassificationDataset(seqs[:len(labels)], labels, 20),
                            num_classes=3, like=like)

    ref = profile(rng.choice(3, 3000, p=[0.5, 0.3, 0.2]).tolist())
    assert compare(ref, profile(rng.choice(3, 600, p=[0.5, 0.3, 0.2]).tolist(), ref))[
        "status"] == "ok"
    shifted = compare(ref, profile(rng.choice(3, 600, p=[0.1, 0.3, 0.6]).tolist(), ref))
    assert {r["feature"]: r["status"] for r in shifted["features"]}["labels"] == "alert"


def test_a_class_the_reference_never_saw_alerts_instead_of_failing():
    rng = np.random.default_rng(2)
    seqs = [rng.integers(0, 50, 10).tolist() for _ in range(1000)]
    ref = data_profile(ClassificationDataset(seqs, rng.choice(2, 1000).tolist(), 10))
    cur = data_profile(ClassificationDataset(seqs[:400], rng.choice([0, 1, 2], 400).tolist(), 10),
                       like=ref)
    rows = {r["feature"]: r for r in compare(ref, cur)["features"]}
    assert rows["labels"]["status"] == "alert"
