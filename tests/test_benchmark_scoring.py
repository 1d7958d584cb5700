"""benchmarks/scoring.py runs end to end (tiny sizes, no Ray) and writes its JSON and plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_scoring_benchmark_measures_every_contender(tmp_path: Path) -> None:
    out = tmp_path / "scoring.json"
    args = ["--rows", "3000", "--files", "2", "--users", "200", "--no-ray", "--forward-rows", "3000",
            "--batch-size", "1024", "--out", str(out)]  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scoring.py"), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    for name in ("din", "autoint_plus"):
        assert result["ctr"][name]["local"]["rows"] == 3000 and result["ctr"][name]["forward"]["rows"] == 3000
        assert result["ctr"][name]["local_vs_forward"] > 0
    assert result["recommend"]["job"]["users"] == result["recommend"]["loop"]["users"] > 0
    assert out.with_suffix(".png").stat().st_size > 0
