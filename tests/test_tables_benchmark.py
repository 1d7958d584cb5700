"""The tables benchmark runs end to end on tiny sizes and writes its JSON and PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tables.py"


def test_tables_benchmark_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "tables.json"
    args = ["--features", "3", "--rows", "500", "--dim", "8", "--batch", "64", "--reps", "2", "--warmup", "1", "--out", str(out)]
    run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["contenders"]) == {
        "raw_tbe", "raw_tbe_packed", "torchrec_fused_ebc", "per_feature", "per_feature_sgd", "multiplexed", "embedding_bag_sgd", "embedding_bag_adagrad",
    }
    assert all(c["lookups_per_s"] > 0 for c in result["contenders"].values())
    assert "raw_tbe / per_feature" in result["ratios"] and "raw_tbe / per_feature" in run.stdout
    assert out.with_suffix(".png").stat().st_size > 1000
