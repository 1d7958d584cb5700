"""split_dataset: random, user and time splits, streamed to Parquet folders, all-or-nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from recsys_embed.pipelines import split_dataset

ROWS = 4000


def write_data(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    table = pa.table({"row": np.arange(ROWS), "timestamp": rng.integers(0, 10_000, ROWS), "user_id": rng.integers(0, 300, ROWS)})
    pq.write_table(table.slice(0, 2500), folder / "a.parquet", row_group_size=700)
    pq.write_table(table.slice(2500), folder / "b.parquet")
    return folder


def read(path: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(path.glob("*.parquet")))


def test_random_split_partitions_rows_reproducibly(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    paths = split_dataset(data, tmp_path / "out", by="random", seed=1, rows_per_file=1000)
    assert list(paths) == ["train", "valid", "test"] and all(p.is_dir() for p in paths.values())
    parts = {name: read(path) for name, path in paths.items()}
    rows = np.concatenate([t.column("row").to_numpy() for t in parts.values()])
    assert sorted(rows.tolist()) == list(range(ROWS))
    assert abs(parts["train"].num_rows / ROWS - 0.8) < 0.03 and abs(parts["test"].num_rows / ROWS - 0.1) < 0.02
    assert len(list(paths["train"].glob("part-*.parquet"))) == 4  # ~3200 rows, 1000 per file
    train_rows = parts["train"].column("row").to_numpy()
    assert np.all(np.diff(train_rows) > 0)  # source order kept
    again = split_dataset(data, tmp_path / "again", by="random", seed=1)
    assert read(again["train"]).column("row").equals(parts["train"].column("row"))
    other = split_dataset(data, tmp_path / "other", by="random", seed=2)
    assert not read(other["train"]).column("row").equals(parts["train"].column("row"))
    assert [p.name for p in (tmp_path / "out").iterdir()] != [] and not list((tmp_path / "out").glob(".*"))


def test_user_split_keeps_each_user_in_one_split(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    paths = split_dataset(data, tmp_path / "out", by="user", fractions=(0.5, 0.5))
    assert list(paths) == ["train", "test"]
    train, test = (set(read(paths[n]).column("user_id").to_pylist()) for n in ("train", "test"))
    assert train and test and not train & test and len(train | test) == 300


def test_time_split_orders_rows_by_time(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    paths = split_dataset(data, tmp_path / "out", by="time")
    times = {name: read(path).column("timestamp").to_numpy() for name, path in paths.items()}
    assert times["train"].max() <= times["valid"].min() and times["valid"].max() <= times["test"].min()
    assert abs(len(times["train"]) / ROWS - 0.8) < 0.01


def test_text_sources_split_to_parquet_and_outputs_are_replaced(tmp_path: Path) -> None:
    csv = tmp_path / "rows.csv"
    pacsv.write_csv(pa.table({"timestamp": [3, 1, 2, 4], "x": ["a", "b", "c", "d"]}), csv)
    paths = split_dataset(csv, tmp_path / "out", by="time", fractions=(0.5, 0.25, 0.25))
    assert read(paths["train"]).column("x").to_pylist() == ["b", "c"]
    assert read(paths["test"]).column("x").to_pylist() == ["d"]
    paths = split_dataset(csv, tmp_path / "out", by="time", fractions=(0.75, 0.0, 0.25))
    assert read(paths["train"]).num_rows == 3 and read(paths["valid"]).num_rows == 0  # empty split: one empty file
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test", "train", "valid"]


def test_a_failing_split_writes_nothing(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    pq.write_table(pa.table({"row": [1], "timestamp": ["late"], "user_id": [1]}), data / "c.parquet")
    with pytest.raises(TypeError, match=r"c\.parquet: column 'timestamp': holds string; a time split needs numbers"):
        split_dataset(data, tmp_path / "out", by="time")
    assert list((tmp_path / "out").iterdir()) == []
    int_columns = pa.schema([("row", pa.int64()), ("timestamp", pa.int64()), ("user_id", pa.int64())])
    pq.write_table(pa.table({"row": [1], "timestamp": [5], "user_id": [None]}, int_columns), data / "c.parquet")
    with pytest.raises(ValueError, match=r"c\.parquet: column 'user_id', row 0: the user is missing"):
        split_dataset(data, tmp_path / "out", by="user")
    assert list((tmp_path / "out").iterdir()) == []


def test_bad_arguments(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    with pytest.raises(ValueError, match="fractions must be 2 or 3 non-negative numbers summing to 1"):
        split_dataset(data, tmp_path / "out", fractions=(0.8, 0.3))
    with pytest.raises(ValueError, match="by='day' is not one of"):
        split_dataset(data, tmp_path / "out", by="day")


def test_parts_are_named_as_asked(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    paths = split_dataset(data, tmp_path / "out", by="time", fractions=(0.9, 0.1), names=("train", "valid"))
    assert list(paths) == ["train", "valid"] and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["train", "valid"]
    assert read(paths["train"]).num_rows + read(paths["valid"]).num_rows == ROWS
    for names in [("train",), ("a", "a"), ("a", "../b"), ("a", ".hidden")]:
        with pytest.raises(ValueError, match=r"names must be 2 distinct folder names \(one per fraction"):
            split_dataset(data, tmp_path / "out", fractions=(0.5, 0.5), names=names)
