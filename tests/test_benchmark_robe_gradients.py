"""benchmarks/robe_gradients.py runs end to end (tiny sizes): dense and sparse reads agree and both are timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_robe_gradients_benchmark_writes_results_with_equal_vectors(tmp_path: Path) -> None:
    out = tmp_path / "robe_gradients.json"
    args = ["--groups", "2", "--rows", "500", "--batch", "64", "--rounds", "3", "--out", str(out)]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "robe_gradients.py"), *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["same_vectors"] is True and result["array_weights_per_group"] == 500 * 16 // 10
    assert set(result["median_cpu_ms"]) == {"dense", "sparse"} and all(v > 0 for v in result["lookups_per_s"].values())
    assert out.with_suffix(".png").stat().st_size > 0
