"""The recommend job on the local engine: BERT4Rec top-k per user from events files, equal to a
plain loop over SequentialRecommender.recommend; the CLI as a real subprocess (its schema errors
through the CLI's ``main`` in process)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch
from scoring_data import seq_artifact

from recsys_embed.jobs.recommend import RecommendJob
from recsys_embed.jobs.score_files import run_local
from recsys_embed.jobs.sequential import load_sequential

CLI = [sys.executable, "-m", "recsys_embed.jobs.cli"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.set_num_threads(1)
    return seq_artifact(tmp_path_factory.mktemp("recommend"))


@pytest.mark.parametrize("exclude_history", [True, False])
def test_recommend_equals_a_loop_over_sequential_recommender(setup: tuple[Path, Path], tmp_path: Path, exclude_history: bool) -> None:
    events, model = setup
    report = run_local(RecommendJob.from_artifact(model, k=7, exclude_history=exclude_history), events, tmp_path / "out",
                       batch_rows=50, progress=False)  # fmt: skip
    assert report.count("written") == 2 and not report.failed
    recommender = load_sequential(model)
    recommender.exclude_history = exclude_history
    for name in ("part-0.parquet", "part-1.parquet"):
        out = pq.read_table(tmp_path / "out" / name)
        source = pl.read_parquet(events / name)
        assert out.column_names == ["user_id", "items", "scores"]
        assert out["user_id"].to_pylist() == sorted(source["user_id"].unique().to_list())
        histories = dict(source.sort("timestamp", "item_id").group_by("user_id", maintain_order=True).agg("item_id").rows())
        for user, items, scores in zip(out["user_id"].to_pylist(), out["items"].to_pylist(), out["scores"].to_pylist()):
            assert [items] == recommender.recommend([histories[user]], k=7)[0]
            assert len(scores) == 7 and np.all(np.diff(scores) <= 0)
            assert not exclude_history or not set(items) & set(histories[user])


def test_recommend_cli_and_its_schema_check(
    setup: tuple[Path, Path], tmp_path: Path, cli_main: Callable[..., subprocess.CompletedProcess]
) -> None:
    events, model = setup
    result = subprocess.run([*CLI, "recommend", "--model", str(model), "--input", str(events), "--output", str(tmp_path / "out"),
                             "--k", "3", "--exclude-history"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "-> 300 output rows: 2 files written, 0 skipped (already done), 0 failed" in result.stdout
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    frame = pl.read_parquet(events / "part-0.parquet")
    frame.rename({"timestamp": "ts"}).with_columns(pl.col("item_id").cast(pl.String)).write_parquet(renamed / "part-0.parquet")
    bad = cli_main("recommend", "--model", str(model), "--input", str(renamed), "--output", str(tmp_path / "bad"))
    assert bad.returncode == 2
    assert "missing column(s) ['timestamp']" in bad.stderr and "column 'item_id' holds large_string" in bad.stderr
    ok = cli_main("recommend", "--model", str(model), "--input", str(renamed), "--output", str(tmp_path / "ok"),
                  "--time-column", "ts", "--item-column", "item_id")  # fmt: skip
    assert ok.returncode == 2 and "column 'item_id' holds large_string" in ok.stderr and "timestamp" not in ok.stderr
