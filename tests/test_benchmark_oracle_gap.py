"""The oracle-gap diagnostics and the best learner bound run end to end on tiny data and write
their JSON and PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "oracle_gap.py"


def test_oracle_gap_smoke_writes_buckets_and_bound(tmp_path: Path) -> None:
    out = tmp_path / "gap.json"
    args = ["--smoke", "--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "runs"), "--out", str(out)]
    run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [e["epoch"] for e in result["din_epochs"]["valid_by_epoch"]][0] == 1
    assert 0.5 < result["din_epochs"]["test_of_best_epoch"]["oracle_auc"] < 1.0
    for column in ("user_id", "item_id"):
        rows = result["gap_by_frequency"][column]
        assert rows, f"no frequency bucket for {column}"
        for r in rows:
            assert r["rows"] >= 20 and abs(r["oracle_auc"] - r["model_auc"] - r["gap"]) < 1e-3
    assert sum(r["rows"] for r in result["gap_by_frequency"]["user_id"]) <= 300
    bound = result["best_learner"]
    assert abs(bound["oracle_auc"] - result["din_epochs"]["test_of_best_epoch"]["oracle_auc"]) < 1e-4
    for variant in (bound, bound["vectors_learned"], bound["biases_and_vectors_learned"]):
        assert variant["chosen"] in variant["grid"]
        assert variant["chosen"]["valid_auc"] == max(g["valid_auc"] for g in variant["grid"])
        assert variant["oracle_auc"] == bound["oracle_auc"] and 0.5 < variant["test_auc"] <= 1.0
        assert abs(variant["oracle_auc"] - variant["test_auc"] - variant["gap"]) < 1e-4
        assert variant["gap_by_frequency"]["user_id"], "no frequency bucket for the bound"

    # the bound alone is merged into the existing JSON, the DIN diagnostics kept
    rerun = subprocess.run([sys.executable, str(SCRIPT), *args, "--only", "bound"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    merged = json.loads(out.read_text())
    assert merged["din_epochs"] == result["din_epochs"] and merged["gap_by_frequency"] == result["gap_by_frequency"]
    assert merged["best_learner"]["test_auc"] == bound["test_auc"]
    assert out.with_suffix(".png").stat().st_size > 1000
