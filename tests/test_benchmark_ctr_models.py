"""The CTR models benchmark runs end to end at a tiny size, on the synthetic data and on a user's
libFM file, and writes its JSON (summary, targets) and PNG."""

from __future__ import annotations

import doctest
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ctr_models.py"
TINY = ["--seeds", "1", "--epochs", "1", "--batch-size", "256", "--table-lr", "0.4"]


def load_script() -> ModuleType:
    """benchmarks/ctr_models.py as a module (registered first: its dataclasses need it)."""
    if "benchmark_ctr_models" not in sys.modules:
        spec = importlib.util.spec_from_file_location("benchmark_ctr_models", SCRIPT)
        assert spec is not None and spec.loader is not None
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules["benchmark_ctr_models"]


def bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    paths = ["--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "runs")]
    return subprocess.run([sys.executable, str(SCRIPT), *TINY, *paths, *args], capture_output=True, text=True, timeout=300)


def test_doctests() -> None:
    result = doctest.testmod(load_script())
    assert result.attempted > 0 and result.failed == 0


def test_synthetic_smoke_run_writes_json_and_png(tmp_path: Path) -> None:
    out = tmp_path / "ctr_models.json"
    run = bench(tmp_path, "--rows", "3000", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    models = ["logistic_regression", "fm", "deepfm", "dcn_v2", "mlp", "autoint_plus", "din"]
    assert list(result["summary"]) == models and result["skipped"] == {}
    assert result["environment"]["torch_threads"] == 1 and 0.5 < result["data"]["oracle_test_auc"] < 1
    for r in result["runs"]:
        assert 0.0 <= r["test"]["auc"] <= 1.0 and r["test"]["logloss"] > 0 and r["train_s"] > 0
        assert r["epochs_run"] == 1 and {"auc", "logloss"} <= set(r["valid_peaks"])
    assert result["models"]["logistic_regression"] == {"name": "mlp", "hidden": []}
    for stats in result["summary"].values():
        assert stats["seeds"] == 1 and stats["test_auc"]["std"] == 0.0 and stats["train_s"]["mean"] > 0
    assert set(result["targets"]) == {"dcn_v2 or deepfm >= autoint_plus", "every deep model > logistic_regression and fm"}
    assert all(isinstance(t["met"], bool) for t in result["targets"].values())
    rules = result["selection_rules"]
    assert list(rules) == ["auc", "auc, logloss guard 0.01", "logloss"]
    assert rules["auc"]["runs"] + rules["auc"]["undecided"] == 7 and rules["auc"]["other_epoch_than_auc"] == 0
    assert out.with_suffix(".png").stat().st_size > 1000
    line = run.stdout.strip().splitlines()[-1]
    assert line.startswith("ctr_models: synthetic CTR, 3,000 rows") and "targets met" in line


def test_a_libfm_file_without_histories_skips_din_and_resumes(tmp_path: Path) -> None:
    lines = [f"{1 if (u + i) % 3 == 0 else -1} {u}:1 {20 + i}:1 {60 + (u * i) % 7}:1" for u in range(20) for i in range(40)]
    data = tmp_path / "sample.libfm"
    data.write_text("\n".join(lines * 2) + "\n")
    out = tmp_path / "libfm.json"
    args = ["--data", str(data), "--schema", "libfm", "--models", "logistic_regression", "fm", "din", "--out", str(out), "--table-lr", "0.05", "0.4"]  # fmt: skip
    run = bench(tmp_path, *args)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["data"]["schema"] == {"name": "libfm", "fields": ["field_0", "field_1", "field_2"]}
    assert list(result["summary"]) == ["logistic_regression", "fm"] and "din" in result["skipped"]
    assert "oracle_test_auc" not in result["data"] and result["targets"] == {}
    assert sorted((r["model"], r["table_lr"]) for r in result["runs"]) == [(m, lr) for m in ("fm", "logistic_regression") for lr in (0.05, 0.4)]
    for model, stats in result["summary"].items():  # each model keeps the tables' lr of its better validation AUC
        by_lr = stats["valid_auc_by_table_lr"]
        assert set(by_lr) == {"0.05", "0.4"} and by_lr[str(stats["table_lr"])] == max(by_lr.values())
    again = bench(tmp_path, *args, "--resume")  # every run is in the JSON: nothing trains again
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(out.read_text())["runs"] == result["runs"]


def test_a_pre_encoded_avazu_file_names_its_columns(tmp_path: Path) -> None:
    data = tmp_path / "avazu.csv"
    data.write_text("label,feat_1,feat_2\n" + "".join(f"{i % 2},a{i % 3},b{i % 5}\n" for i in range(20)))
    read = load_script().user_data(data, "avazu", tmp_path / "data")
    assert read.schema == {"name": "avazu", "columns": ["feat_1", "feat_2"]}
    assert set(read.splits) == {"train", "valid", "test"} and all(Path(p).is_dir() for p in read.splits.values())


def test_bad_arguments_are_refused_before_any_work(tmp_path: Path) -> None:
    run = bench(tmp_path, "--data", str(tmp_path / "x.txt"))
    assert run.returncode == 2 and "--data and --schema go together" in run.stderr
    run = bench(tmp_path, "--metric", "logloss", "--logloss-guard", "0.01")
    assert run.returncode == 2 and "logloss_guard guards a metric where higher is better" in run.stderr
    assert not (tmp_path / "data").exists()
