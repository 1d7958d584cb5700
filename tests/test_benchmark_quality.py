"""The quality benchmark runs end to end on tiny data and writes its JSON and PNG."""

from __future__ import annotations

import argparse
import doctest
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


def load_script() -> ModuleType:
    """benchmarks/quality.py as a module (registered first: its dataclasses need it)."""
    spec = importlib.util.spec_from_file_location("benchmark_quality", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


def test_doctests() -> None:
    result = doctest.testmod(load_script())
    assert result.attempted > 0 and result.failed == 0


def test_bucket_allocation_meets_the_budget_and_keeps_small_tables() -> None:
    quality = load_script()
    sizes = {"user_id": 90_000, "item_id": 50_000, "device": 3, "hour": 24}
    dims = dict.fromkeys(sizes, 16)
    exact = sum((n + 2) * 16 for n in sizes.values())
    for k in (1, 10, 100):
        buckets = quality.allocate_buckets(sizes, dims, exact // k, floor=32)
        cost = sum((b + 2) * 16 for b in buckets.values())
        assert exact // k - 16 * len(sizes) <= cost <= exact // k
        assert buckets["device"] == 3 and buckets["hour"] == 24
        assert buckets["user_id"] > buckets["item_id"] > 32
    assert quality.allocate_buckets(sizes, dims, 16, floor=32) == {"user_id": 32, "item_id": 32, "device": 3, "hour": 24}


def test_a_contender_is_a_name_and_a_json_object() -> None:
    quality = load_script()
    assert quality.contender('alpt 0.5={"method": "lpt", "max_abs": 0.5}') == ("alpt 0.5", {"method": "lpt", "max_abs": 0.5})
    for bad in ("lpt", 'lpt={"method": "lpt"', "lpt=[1, 2]", '={"method": "lpt"}'):
        with pytest.raises(argparse.ArgumentTypeError, match="expected NAME=JSON"):
            quality.contender(bad)


def test_targets_compare_the_named_pairs() -> None:
    quality = load_script()
    record = lambda auc: {"test": {"auc": auc, "oracle_auc": 0.85}}  # noqa: E731
    targets = quality.part1_targets({"mlp": record(0.80), "din": record(0.845), "din_sum_pooling": record(0.846),
                                     "autoint": record(0.83)})  # fmt: skip
    assert targets["din within 0.01 of oracle"]["met"] and not targets["autoint within 0.01 of oracle"]["met"]
    assert not targets["din > din_sum_pooling"]["met"] and targets["autoint > mlp"]["met"]


def test_quality_benchmark_smoke_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "quality.json"
    args = ["--smoke", "--models", "mlp", "din_sum_pooling", "--budgets", "10", "--probes", "1", "2", "--methods", "qr", "floor: one hashed row",
            "--contenders", 'hashing 64={"method": "hashing", "rows": 64}', "--data-dir", str(tmp_path / "data"),
            "--work-dir", str(tmp_path / "runs"), "--out", str(out)]  # fmt: skip
    run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["settings"]["rows"] == 2000 and result["environment"]["torch_threads"] == 1
    models = result["part1"]["models"]
    assert set(models) == {"mlp", "din_sum_pooling"}
    for r in models.values():
        assert 0.0 <= r["test"]["auc"] <= 1.0 and 0.5 < r["test"]["oracle_auc"] < 1.0
        assert r["table_parameters"] > 0 and r["steps"] > 0
    assert result["part1"]["targets"] == {}  # no target pair ran both of its models
    entry = result["part2"]["budgets"]["10"]
    exact = result["part2"]["exact_vocabulary_parameters"]
    hashed, multiplexed = entry["hashing"]["table_parameters"], entry["multiplexed"]["table_parameters"]
    assert hashed == multiplexed  # equal memory, as the benchmark claims
    two = entry["multiplexed_2_probes"]["layout"]  # same memory, each feature's dim kept: twice the rows of half the width
    assert (two["probes"], two["chunk_dim"], two["rows"]) == (2, 8, 2 * entry["multiplexed"]["layout"]["rows"])
    assert entry["multiplexed_2_probes"]["table_parameters"] == multiplexed and "| 1/10 | 2 x 8 |" in run.stdout
    assert hashed < exact and entry["plan"]["target_parameters"] == exact // 10
    assert result["part2"]["exact_vocabulary"] == models["mlp"]
    assert "| 1/10 |" in run.stdout and "| mlp |" in run.stdout
    part3 = result["part3"]
    assert set(part3["methods"]) == {"qr", "floor: one hashed row", "hashing 64"} and part3["compressed_groups"]
    assert part3["methods"]["hashing 64"]["layout"]["compression"] == dict.fromkeys(part3["compressed_groups"], {"method": "hashing", "rows": 64})
    qr = part3["methods"]["qr"]
    assert set(qr["layout"]["compression"]) == set(part3["compressed_groups"]) and qr["table_parameters"] < models["mlp"]["table_parameters"]
    assert part3["methods"]["floor: one hashed row"]["table_parameters"] < qr["table_parameters"]
    assert "| qr |" in run.stdout and "| exact (part 1) |" in run.stdout
    assert out.with_suffix(".png").stat().st_size > 1000
    # --reuse takes every run from the JSON: nothing is trained again
    again = subprocess.run([sys.executable, str(SCRIPT), *args, "--reuse", str(out)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(oracle" not in again.stdout and json.loads(out.read_text())["part1"]["models"] == models
