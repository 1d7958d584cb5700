"""The training benchmark: its smoke run (ours only; the peers' venv is not there in CI) writes
its JSON and PNG, and its summary picks the best repetition and the faster peer."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "training.py"


def load_benchmark():
    """``benchmarks/training.py`` as a module (benchmarks/ is no package)."""
    if "benchmark_training" not in sys.modules:
        spec = importlib.util.spec_from_file_location("benchmark_training", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["benchmark_training"]


def test_smoke_run_writes_json_and_png(tmp_path: Path) -> None:
    results, work = tmp_path / "results", tmp_path / "work"
    args = ["--smoke", "--results", str(results), "--work-dir", str(work)]
    run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((results / "training.json").read_text())
    assert set(result["summary"]) == {"ours din", "ours autoint"}
    assert [(r["framework"], r["model"]) for r in result["runs"]] == [("ours", "din"), ("ours", "autoint")]
    test_rows = pq.ParquetFile(work / "peers-test.parquet").metadata.num_rows
    train_rows = pq.ParquetFile(work / "peers-train.parquet").metadata.num_rows
    assert result["data"]["test_rows"] == test_rows > 0
    for run_report in result["runs"]:
        assert run_report["samples"] == train_rows
        assert run_report["steps"] == -(-train_rows // result["config"]["batch_size"])
        assert run_report["samples_per_s"] > 0 and run_report["loop_seconds"]["wall"] > 0
        assert 0.0 <= run_report["auc"] <= 1.0 and run_report["logloss"] > 0
        assert run_report["threads"] == 1
    assert result["ratios"] == {}  # no peer ran
    assert 0.5 < result["data"]["oracle_test_auc"] < 1.0
    assert (results / "training.png").stat().st_size > 5000
    assert "ours autoint" in run.stdout and "oracle test AUC" in run.stdout


def fake_run(framework: str, model: str, rep: int, rate: float, auc: float) -> dict:
    return {
        "framework": framework, "model": model, "rep": rep, "samples_per_s": rate, "samples_per_cpu_s": rate / 2,
        "data_share": 0.1, "auc": auc, "logloss": 0.5, "dense_parameters": 10, "embedding_parameters": 20,
    }  # fmt: skip


def test_summary_keeps_best_rep_and_ratio_uses_faster_peer() -> None:
    bench = load_benchmark()
    runs = [
        fake_run("ours", "din", 0, 900.0, 0.70), fake_run("ours", "din", 1, 1000.0, 0.72),
        fake_run("deepctr", "din", 0, 400.0, 0.69), fake_run("rechub", "din", 0, 450.0, 0.71),
        fake_run("ours", "autoint", 0, 500.0, 0.60), fake_run("rechub", "autoint", 0, 400.0, 0.62),
    ]  # fmt: skip
    summary = bench.summarize(runs)
    assert summary["ours din"]["samples_per_s"] == 1000.0
    assert summary["ours din"]["auc"] == pytest.approx(0.71)
    ratios = bench.ratios(summary)
    assert ratios["din"]["faster_peer"] == "rechub"
    assert ratios["din"]["speedup"] == pytest.approx(1000 / 450)
    assert ratios["din"]["met"] is True
    assert ratios["autoint"]["speedup"] == pytest.approx(1.25)
    assert ratios["autoint"]["met"] is False  # slower than 2x and a worse AUC


@pytest.mark.parametrize(("frameworks", "models", "error"), [("ours,tensorflow", "din", "tensorflow"), ("ours", "din,dcn", "dcn")])
def test_unknown_framework_or_model_is_a_value_error(tmp_path: Path, frameworks: str, models: str, error: str) -> None:
    bench = load_benchmark()
    args = bench.argparse.Namespace(
        rows=100, seed=0, batch_size=64, epochs=1, threads=1, frameworks=frameworks, models=models, reps=1,
        work_dir=str(tmp_path), results=str(tmp_path),
    )  # fmt: skip
    with pytest.raises(ValueError, match=error):
        bench.benchmark(args)
