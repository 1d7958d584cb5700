"""benchmarks/din_speed.py runs end to end (tiny sizes), writes its JSON and PNG, and its two code
paths (before / now) give the same logits on the same weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_din_speed_benchmark_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "din_speed.json"
    args = ["--rows", "3000", "--rounds", "2", "--steps", "2", "--forward-batch", "512", "--forward-batches", "2",
            "--train-batches", "256", "--out", str(out)]  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "din_speed.py"), *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    forward = result["forward"]
    assert forward["rows"] == 1024 and forward["max_abs_logit_diff"] < 1e-4
    assert len(forward["ratio_per_round"]["wall"]) == 2 and forward["speedup_median"]["cpu"] > 0
    assert set(forward["top_ops"]) == {"before", "now"} and forward["top_ops"]["now"]["ops"]
    assert forward["top_ops"]["before"]["dice_share"] == 0 < forward["top_ops"]["now"]["dice_share"] < 1
    train = result["training"]["256"]
    assert train["steps_per_round"] == 2 and set(train["step_ms"]) == {"before", "now"}
    assert len(train["model_only"]["ratio_per_round"]["cpu"]) == 2
    before, now = train["first_losses"]["before"], train["first_losses"]["now"]
    assert abs(before[0] - now[0]) < 1e-5  # same weights, same first batch: the same loss
    assert result["machine"]["threads"] == 1
    assert out.with_suffix(".png").stat().st_size > 5000
    assert "train step (batch 256)" in done.stdout
