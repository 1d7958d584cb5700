"""Every script in examples/ runs, as a real subprocess, on tiny data."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script, pattern", [
    ("train_din.py", r"DIN test AUC (0\.\d+) \(oracle 0\.\d+\)"),
    ("train_autoint.py", r"AutoInt\+ test AUC (0\.\d+) \(oracle 0\.\d+\)"),
])
def test_ctr_example_trains(tmp_path: Path, script: str, pattern: str) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / script), "20000", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(pattern, result.stdout)
    assert match, result.stdout[-2000:]
    assert float(match.group(1)) > 0.55
    assert (tmp_path / "run" / "metrics.json").exists()
