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


@pytest.fixture(scope="module")
def ctr_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from scoring_data import ctr_artifact, ctr_inputs

    root = tmp_path_factory.mktemp("scoring-example")
    inputs = ctr_inputs(root, files=2, rows_per_file=1500)
    return inputs, ctr_artifact(root, inputs, "autoint")


def test_score_parquet_example(ctr_model: tuple[Path, Path], tmp_path: Path) -> None:
    inputs, model = ctr_model
    result = subprocess.run([sys.executable, str(EXAMPLES / "score_parquet.py"), str(model), str(inputs), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert re.match(r"500 rows of part-0\.parquet: mean score 0\.\d{4}", lines[0]), lines[0]
    assert "3,000 rows" in lines[1] and "2 files written, 0 skipped" in lines[1]
    assert "0 files written, 2 skipped (already done)" in lines[2]


def test_score_map_in_arrow_example(ctr_model: tuple[Path, Path]) -> None:
    inputs, model = ctr_model
    result = subprocess.run([sys.executable, str(EXAMPLES / "score_map_in_arrow.py"), str(model), str(inputs / "part-1.parquet")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scored 1,500 rows in 2 Arrow batches; schema ['user_id', 'item_id', 'score']" in result.stdout
