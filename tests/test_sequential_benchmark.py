"""The sequential benchmark runs end to end on tiny one-user-per-line files and writes its JSON
(anchors, targets, curves, memory) and PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sequential.py"


def test_sequential_benchmark_writes_results(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for stem in ("Beauty", "Toys_and_Games"):
        starts = rng.integers(0, 40, 150)
        lines = [" ".join(map(str, [u + 1, *((s + np.arange(7)) % 40 + 1)])) for u, s in enumerate(starts)]
        (tmp_path / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "sequential.json"
    args = ["--data-dir", str(tmp_path), "--data", "Beauty,Toys_and_Games,Missing", "--minutes", "0.15", "--eval-every", "5",
            "--batch-size", "32", "--out", str(out)]  # fmt: skip
    run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "skipping Missing" in run.stdout and "Beauty: " in run.stdout and "(ICLRec 0.0403)" in run.stdout
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"Beauty", "Toys_and_Games"} and set(result["runs"]["Beauty"]) == {"sasrec", "bert4rec"}
    run_ = result["runs"]["Toys_and_Games"]["sasrec"]
    assert run_["curve"] and run_["curve"][0]["steps"] == 5 and run_["peak_rss_mb"] > 0 and run_["data"]["users"] == 150
    assert set(run_["test"]) == {f"{m}@{k}" for m in ("hr", "ndcg") for k in (5, 10, 20)}
    assert result["anchors_iclrec"]["Toys_and_Games"]["ndcg@10"] == 0.0480
    assert result["targets"]["Beauty"]["model_selected_on_validation"] in ("sasrec", "bert4rec")
    assert out.with_suffix(".png").stat().st_size > 1000
