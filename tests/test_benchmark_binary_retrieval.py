"""benchmarks/binary_retrieval.py --smoke runs end to end for SASRec and BERT4Rec: recall of each code against exact float
retrieval, and speeds."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="the [retrieval] extra (faiss-cpu) is not installed")
@pytest.mark.parametrize(("model", "dim"), [("sasrec", 16), ("bert4rec", 17)])  # BERT4Rec's rows [e_i, b_i]: D + 1
def test_binary_retrieval_smoke_writes_recall_and_speed(model: str, dim: int, tmp_path: Path) -> None:
    out = tmp_path / "binary_retrieval.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "binary_retrieval.py"), "--smoke", "--model", model, "--out", str(out)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["model"]["name"] == model and result["model"]["dim"] == dim and result["config"]["model"] == model
    assert [c["code"] for c in result["codes"]] == ["untrained", "1x16", "2x16"]
    for code in result["codes"]:
        assert 0 <= code["recall@10_hamming"] <= 1 and code["bytes_per_item"] == code["bits_per_item"] / 8
        assert code["speed_item_table"]["binary_qps"] > 0 and code["speed_item_table"]["float_qps"] > 0
    assert all(c["speed_scaled"]["items"] == 2000 for c in result["codes"][1:])
    assert out.with_suffix(".png").stat().st_size > 0
