"""The quantization benchmark runs end to end at a tiny size and writes its JSON and PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quantization.py"


def test_smoke_run_writes_speed_bytes_and_auc_changes(tmp_path: Path) -> None:
    out = tmp_path / "quantization.json"
    args = ["--smoke", "--models", "mlp", "--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "runs"), "--out", str(out)]
    run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    speed = result["speed"]["contenders"]
    assert list(speed) == ["fp32", "fp16", "int8", "int4", "int2"]
    assert speed["fp32"]["bytes"] == 4 * 1000 * 16 * 4 and speed["fp32"]["speed_vs_fp32"] == 1.0
    assert speed["fp32"]["bytes"] > speed["fp16"]["bytes"] > speed["int8"]["bytes"] > speed["int4"]["bytes"] > speed["int2"]["bytes"]
    mlp = result["quality"]["models"]["mlp"]
    for bits in ("16", "8", "4", "2"):
        assert mlp[bits]["auc_change"] == round(mlp[bits]["test"]["auc"] - mlp["fp32"]["test"]["auc"], 5)
        assert mlp[bits]["table_bytes"] < mlp["fp32"]["table_bytes"]
    assert abs(mlp["8"]["auc_change"]) < 0.01  # int8 rows: half a step of error per value
    assert set(result["quality"]["targets"]) == {"int8 loses at most 0.001 test AUC", "int4 loses at most 0.003 test AUC"}
    assert out.with_suffix(".png").stat().st_size > 1000
    assert run.stdout.strip().splitlines()[-1].startswith("quantization: int8 ")


def test_unknown_models_are_refused_before_any_work(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--models", "resnet", "--data-dir", str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 2 and "--models ['resnet']: not models of benchmarks/quality.py" in run.stderr
    assert not (tmp_path / "data").exists()
