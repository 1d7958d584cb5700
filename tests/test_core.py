"""Floor-1 pieces: stable hashing (golden values), metrics, checkpoint state round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from recsys_embed import hashing, metrics
from recsys_embed.checkpoint import load_state, save_state
from recsys_embed.errors import UndefinedMetricWarning

# Pinned forever: changing any of these remaps every hashed id between training and scoring.
GOLDEN_INT = {0: 16294208416658607535, 1: 10451216379200822465, -5: 1635312068028924514, 2**62: 47939714376772075}
GOLDEN_STR = {"a": 6857225946766476583, "item_42": 12211716601083945239, "": 14087677454934409008, "é": 7936488146098753722}


def test_int_hash_golden_values_numpy_and_torch_agree() -> None:
    values = np.array(list(GOLDEN_INT), dtype=np.int64)
    got = hashing.hash_int_np(values, seed=0)
    assert got.tolist() == list(GOLDEN_INT.values())
    as_torch = hashing.hash_int_torch(torch.from_numpy(values), seed=0).numpy().view(np.uint64)
    assert as_torch.tolist() == list(GOLDEN_INT.values())


def test_string_hash_golden_values() -> None:
    got = hashing.hash_arrow(pa.array(list(GOLDEN_STR)), seed=hashing.FNV_OFFSET)
    assert got.tolist() == list(GOLDEN_STR.values())


def test_seed_of_and_bucket_are_stable() -> None:
    # reference values of the published algorithms: FNV-1a 64 and the first SplitMix64 output
    assert hashing.seed_of("") == 0xCBF29CE484222325 and hashing.seed_of("a") == 0xAF63DC4C8601EC8C
    assert int(hashing.splitmix64_np(np.array([0], dtype=np.uint64))[0]) == 0xE220A8397B1DCDAF
    assert hashing.seed_of("item_id") == 0x9E7FD06D864FBD56
    string_hash = hashing.hash_arrow(pa.array(["a"]), seed=hashing.FNV_OFFSET)
    assert string_hash.tolist() == hashing.splitmix64_np(np.array([0xAF63DC4C8601EC8C], dtype=np.uint64)).tolist()
    values = torch.tensor([0, 1, 2, 3, -7, 2**40], dtype=torch.int64)
    buckets = hashing.bucket_torch(values, hashing.seed_of("x"), 1000)
    expected = (hashing.hash_int_np(values.numpy(), hashing.seed_of("x")) % np.uint64(1000)).astype(np.int64)
    assert buckets.tolist() == expected.tolist()
    assert int(buckets.min()) >= 0 and int(buckets.max()) < 1000


def test_auc_hand_made_case_and_ties() -> None:
    assert metrics.oracle_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert metrics.auc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)
    with pytest.warns(UndefinedMetricWarning, match="AUC is undefined"):
        assert math.isnan(metrics.auc(np.array([0.1, 0.2]), np.array([1, 1])))
    rng = np.random.default_rng(0)
    s, y = rng.random(500), rng.integers(0, 2, 500)
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in s[y == 1] for b in s[y == 0]])
    assert metrics.auc(s, y) == pytest.approx(brute)


def test_gauc_weights_groups_with_both_classes() -> None:
    scores = np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.6])
    labels = np.array([1, 0, 1, 0, 1, 1])
    groups = np.array([1, 1, 2, 2, 3, 3])  # group 3 has one class: ignored
    assert metrics.gauc(scores, labels, groups) == pytest.approx((2 * 1.0 + 2 * 0.0) / 4)


def test_ranking_metrics() -> None:
    ranks = np.array([1, 2, 11])
    assert metrics.hit_rate(ranks, 10) == pytest.approx(2 / 3)
    assert metrics.ndcg(ranks, 10) == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert metrics.mrr(ranks, 10) == pytest.approx((1 + 0.5) / 3)
    assert metrics.logloss(np.array([0.5]), np.array([1])) == pytest.approx(math.log(2))


def test_checkpoint_state_round_trip(tmp_path: Path) -> None:
    state = {"w": torch.randn(3, 2), "nested": {"step": 7, 1: [torch.zeros(0), 0.5, None, "s"]}, "t": (1, torch.ones(1))}
    save_state(tmp_path / "ck", state)
    save_state(tmp_path / "ck", state)  # overwrite is atomic and leaves no temp dirs
    back = load_state(tmp_path / "ck")
    assert torch.equal(back["w"], state["w"]) and back["nested"]["step"] == 7
    assert back["nested"][1][1:] == [0.5, None, "s"] and isinstance(back["t"], tuple)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    with pytest.raises(TypeError, match="cannot store"):
        save_state(tmp_path / "bad", {"x": object()})
    with pytest.raises(FileNotFoundError, match="no state.json"):
        load_state(tmp_path)
