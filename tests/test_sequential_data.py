"""Sequential data: the one-user-per-line reader and its bad input, ties broken by file order,
training windows that leave no item out, the hint for a file of another format, and SASRec
end to end through ``recsys-embed train`` on a one-user-per-line file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from recsys_embed.jobs.sequential import scan_parquet_events
from recsys_embed.pipelines.derived import leave_one_out, sliding_windows, user_sequences
from recsys_embed.pipelines.readers import read_user_lines


def write_cycle_lines(path: Path, users: int = 120, length: int = 8, items: int = 25, seed: int = 0) -> Path:
    """Users walking a cycle of ``items`` ids (1-based) from random starts; one user per line."""
    start = np.random.default_rng(seed).integers(0, items, users)
    lines = [" ".join(map(str, [user + 1, *((s + np.arange(length)) % items + 1)])) for user, s in enumerate(start)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reader_gives_events_in_file_order_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "seq.txt"
    path.write_text("3 7 5 7 1\r\n\n  \n1 2\n2 9 9 9\n")  # CRLF, blank lines, repeats, a one-item user
    events = read_user_lines(path).collect()
    assert events.schema == {"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64}
    assert events.rows() == [(3, 7, 0), (3, 5, 1), (3, 7, 2), (3, 1, 3), (1, 2, 0), (2, 9, 0), (2, 9, 1), (2, 9, 2)]
    sequences = user_sequences(events.lazy(), min_length=3)
    assert sequences.rows() == [(2, [9, 9, 9]), (3, [7, 5, 7, 1])]  # user 1 has too few items


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 2 3\n2 4 x5\n", r"seq.txt:2: token 'x5' is not an integer id"),
        ("user_id item_id\n1 2\n", r"seq.txt:1: token 'user_id' is not an integer id"),
        ("1,2,3\n", r"seq.txt:1: fields separated by commas"),
        ("1\t2\t3\n", r"seq.txt:1: fields separated by tabs"),
        ("1 2 3\n\n1 4 5\n", r"seq.txt:3: user 1 already had line 1"),
        ("1 2.5 3\n", r"seq.txt:1: token '2.5' is not an integer id"),
    ],
)
def test_bad_lines_are_named_with_the_expected_format(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "seq.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message + r".*expected one user per line: 'user_id item_id item_id \.\.\.'"):
        read_user_lines(path)


def test_a_parquet_file_is_not_a_user_lines_file(tmp_path: Path) -> None:
    path = tmp_path / "events.txt"
    pq.write_table(pa.table({"user_id": [1, 2], "item_id": [3, 4]}), path)
    with pytest.raises(ValueError, match=r"events.txt:1: not a text line \(binary data: is this a Parquet"):
        read_user_lines(path)
    with pytest.raises(FileNotFoundError, match="missing.txt: no such file"):
        read_user_lines(tmp_path / "missing.txt")


def test_timestamp_ties_keep_the_order_of_the_events() -> None:
    # item ids 9, 3, 5 share a timestamp: file order, not id order, decides (as other libraries split)
    events = pl.LazyFrame({"user_id": [1, 1, 1, 1, 1, 1], "item_id": [9, 3, 5, 3, 7, 9],
                           "timestamp": [10, 10, 10, 10, 5, 20]})  # fmt: skip
    (row,) = user_sequences(events, min_length=3).rows()
    assert row == (1, [7, 9, 3, 5, 9])  # the repeated (3, 10) event counts once, at its first place
    train, valid, test = leave_one_out(pl.DataFrame({"user_id": [1], "items": [row[1]]}))
    assert valid["target"].to_list() == [5] and test["target"].to_list() == [9]


@pytest.mark.parametrize("length", [2, 3, 7, 51])
def test_sliding_windows_keep_every_next_item_pair(length: int) -> None:
    rng = np.random.default_rng(length)
    sequences = [list(rng.integers(0, 1000, int(n))) for n in rng.integers(1, 130, 60)]
    frame = pl.DataFrame({"user_id": range(60), "items": sequences})
    windows = sliding_windows(frame, length)
    assert windows["items"].list.len().max() <= length
    for user, sequence in enumerate(sequences):
        rows = windows.filter(pl.col("user_id") == user)["items"].to_list()
        pairs = {(i, tuple(sequence[i : i + 2])) for i in range(len(sequence) - 1)}
        assert rows[0] == sequence[-length:]  # the most recent window first
        covered, position = set(), len(sequence)
        for row in rows:  # windows back to front, each ending where the previous one starts + 1
            start = position - len(row)
            assert sequence[start:position] == row
            covered |= {(start + i, tuple(row[i : i + 2])) for i in range(len(row) - 1)}
            position = start + 1
        assert covered == pairs and position == 1 or len(sequence) == 1
    with pytest.raises(ValueError, match="length must be >= 2"):
        sliding_windows(frame, 1)


def test_a_file_of_another_format_gets_the_format_to_use(tmp_path: Path) -> None:
    for name, format_ in (("u.data", "movielens"), ("ratings.dat", "movielens"), ("Beauty.txt", "user_lines")):
        with pytest.raises(ValueError, match=re.escape(f"set data.format: {format_}")):
            scan_parquet_events(tmp_path / name)


def test_sasrec_from_a_user_lines_file_through_the_cli(tmp_path: Path, cli_main) -> None:
    data = write_cycle_lines(tmp_path / "cycle.txt")
    with data.open("a") as lines:
        lines.write("999 1 2\n")  # too short for a split: skipped, and counted
    config = {
        "task": "sequential",
        "data": {"events": "cycle.txt", "format": "user_lines"},
        "model": {"name": "sasrec", "max_len": 6, "dim": 16, "num_layers": 1, "dropout": 0.1},
        "trainer": {"epochs": 40, "batch_size": 16, "lr": 0.005, "eval_every": 12, "patience": 3, "max_seconds": 120,
                    "checkpoints": False, "progress": False},
        "run_dir": str(tmp_path / "run"),
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    result = cli_main("train", "--config", str(tmp_path / "run.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("sasrec test NDCG@10 ") and "[full ranking, history excluded]" in summary
    assert "1 users skipped (fewer than min_length events)" in summary
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == "sasrec" and metrics["data"]["users"] == 120 and metrics["data"]["skipped_users"] == 1
    assert metrics["data"]["train_items"] == metrics["data"]["train_items_in_rows"] == 120 * 6
    assert metrics["test"]["ndcg@10"] > 2 * metrics["popularity"]["test"]["ndcg@10"]
    steps = [e["steps"] for e in metrics["evaluations"]]
    assert steps[:3] == [12, 24, 36] and metrics["best"]["steps"] in steps
    assert not (tmp_path / "run" / "checkpoint").exists()
