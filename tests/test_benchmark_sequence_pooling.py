"""benchmarks/sequence_pooling.py runs end to end (tiny sizes) and its two arrangements agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sequence_pooling_benchmark_writes_results_with_equal_weights(tmp_path: Path) -> None:
    out = tmp_path / "sequence_pooling.json"
    args = ["--rows", "500", "--batch", "64", "--max-len", "8", "--mean-len", "3", "--rounds", "2", "--out", str(out)]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sequence_pooling.py"), *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["same_weights_after_updates"] is True
    assert result["bags_positions"] == 64 * (9 + 2 * 8) and set(result["median_cpu_ms"]) == {"positions", "pooling_none"}
    assert out.with_suffix(".png").stat().st_size > 0
