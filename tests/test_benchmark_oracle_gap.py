"""The oracle-gap diagnostic runs end to end on tiny data and writes its JSON and PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "oracle_gap.py"


def test_oracle_gap_smoke_writes_buckets(tmp_path: Path) -> None:
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
    assert out.with_suffix(".png").stat().st_size > 1000
