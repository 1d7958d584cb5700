"""Bad input: every error names the file, the column and the row where known."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_embed.artifacts import save_artifact
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.pipelines import FittedState, Pipeline

SCHEMA = Schema(
    [FeatureSpec("item"), FeatureSpec("price", kind="numeric", transform="log1p_standardize")], label="label"
)
GOOD = pa.table({"item": pa.array([1, 2, 3], pa.int64()), "price": [1.0, 2.0, 3.0], "label": [0, 1, 0]})


def parquet(tmp_path: Path, table: pa.Table, name: str = "data.parquet") -> Path:
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def fitted() -> Pipeline:
    return Pipeline(SCHEMA).fit(GOOD)


def test_missing_column(tmp_path: Path) -> None:
    path = parquet(tmp_path, GOOD.drop_columns(["price"]))
    with pytest.raises(ValueError, match=r"data\.parquet: missing column\(s\) \['price'\]; the data has \['item', 'label'\]"):
        Pipeline(SCHEMA).fit(path)
    csv = tmp_path / "data.csv"
    csv.write_text("item,label\n1,0\n")
    with pytest.raises(ValueError, match=r"data\.csv: missing column\(s\) \['price'\]"):
        list(fitted().transform(csv))


def test_string_in_a_numeric_column(tmp_path: Path) -> None:
    path = parquet(tmp_path, GOOD.set_column(1, "price", pa.array(["1", "2", "x"])))
    with pytest.raises(TypeError, match=r"data\.parquet: column 'price': holds string; numeric feature 'price' expects numbers"):
        Pipeline(SCHEMA).fit(path)
    csv = tmp_path / "data.csv"
    csv.write_text("item,price,label\n1,2.5,0\n2,abc,1\n")
    with pytest.raises(ValueError, match=r"data\.csv: column 'price', row 1: value 'abc' is not a double"):
        Pipeline(SCHEMA).fit(csv)


def test_all_null_column_at_fit(tmp_path: Path) -> None:
    path = parquet(tmp_path, GOOD.set_column(0, "item", pa.nulls(3, pa.int64())))
    with pytest.raises(ValueError, match=r"'item' \(feature 'item'\) hold no value in any of the 3 rows of .*data\.parquet"):
        Pipeline(SCHEMA).fit(path)


def test_empty_file(tmp_path: Path) -> None:
    for name in ("empty.parquet", "empty.csv"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(ValueError, match=rf"{name}: the file is empty \(0 bytes\)"):
            Pipeline(SCHEMA).fit(tmp_path / name)


def test_truncated_and_corrupt_parquet(tmp_path: Path) -> None:
    path = parquet(tmp_path, GOOD)
    whole = path.read_bytes()
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"truncated\.parquet: not a readable Parquet file \(truncated or corrupt\?\)"):
        Pipeline(SCHEMA).fit(truncated)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(whole[:4] + b"\xff" * (len(whole) - 200) + whole[-196:])  # data pages overwritten
    with pytest.raises(ValueError, match=r"corrupt\.parquet: (cannot read row group 0|not a readable Parquet file)"):
        Pipeline(SCHEMA).fit(corrupt)


def test_negative_values_under_log1p_are_clipped_to_zero(tmp_path: Path) -> None:
    """Documented choice: log1p features clip negatives to 0 (as DLRM does for Criteo)."""
    data = GOOD.set_column(1, "price", pa.array([-5.0, 0.0, 3.0]))
    pipe = Pipeline(SCHEMA).fit(data)
    raw = pa.table({"item": [1, 1], "price": [-5.0, 0.0], "label": [0, 0]})
    dense = next(pipe.transform(raw)).column("price").to_pylist()
    assert dense[0] == dense[1]  # -5 encodes exactly like 0


def test_infinite_numbers_name_the_row(tmp_path: Path) -> None:
    path = parquet(tmp_path, GOOD.set_column(1, "price", pa.array([1.0, float("inf"), 2.0])))
    with pytest.raises(ValueError, match=r"data\.parquet: column 'price', row 1: value inf is infinite"):
        Pipeline(SCHEMA).fit(path)


def test_list_column_where_a_scalar_is_expected(tmp_path: Path) -> None:
    path = parquet(tmp_path, GOOD.set_column(0, "item", pa.array([[1], [2, 3], []])))
    with pytest.raises(TypeError, match=r"data\.parquet: column 'item': holds lists .* categorical and expects one value per row"):
        Pipeline(SCHEMA).fit(path)


def test_ids_beyond_int64(tmp_path: Path) -> None:
    big = pa.array([1, 2**63 + 5, 3], pa.uint64())
    path = parquet(tmp_path, GOOD.set_column(0, "item", big))
    with pytest.raises(ValueError, match=r"data\.parquet: column 'item', row 1: value 9223372036854775813 exceeds the int64 range"):
        Pipeline(SCHEMA).fit(path)
    small = parquet(tmp_path, GOOD.set_column(0, "item", pa.array([1, 2, 3], pa.uint64())), "small.parquet")
    assert Pipeline(SCHEMA).fit(small).state.tables["item"].vocabulary.to_pylist() == [1, 2, 3]


def test_state_of_another_schema_is_refused(tmp_path: Path) -> None:
    pipe = fitted()
    other = Schema([FeatureSpec("item", min_count=2), FeatureSpec("price", kind="numeric", transform="log1p_standardize")], label="label")
    with pytest.raises(ValueError, match="fitted state was fitted for another schema"):
        Pipeline(other, pipe.state)
    arrays, saved = pipe.export_state()
    saved["schema"] = other.to_dict()
    with pytest.raises(ValueError, match=r"artifact .*saved was fitted for another schema"):
        Pipeline.load(save_artifact(tmp_path / "saved", {}, {"pipeline": saved}, arrays))
    pipe.schema = other  # a schema changed after fitting is caught at transform time
    with pytest.raises(ValueError, match="fitted for another schema"):
        list(pipe.transform(GOOD))
    with pytest.raises(ValueError, match="not a saved pipeline"):
        Pipeline.from_state({}, {"schema": other.to_dict()})
    with pytest.raises(ValueError, match="format_version 99 is not supported"):
        FittedState.from_state({}, {"schema_fingerprint": "x", "format_version": 99})


def test_missing_label_names_the_row(tmp_path: Path) -> None:
    path = parquet(tmp_path, GOOD.set_column(2, "label", pa.array([0, None, 1])))
    with pytest.raises(ValueError, match=r"data\.parquet: column 'label', row 1: the label is missing"):
        list(fitted().transform(path))


def test_source_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file or directory"):
        fitted().transform(tmp_path / "nope.parquet")
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(ValueError, match=r"unknown file type '\.md'"):
        fitted().transform(tmp_path / "notes.md")
    with pytest.raises(ValueError, match="holds no Parquet/CSV/TSV file"):
        fitted().transform(tmp_path)


def test_bad_token_in_an_integer_sequence_names_its_row(tmp_path: Path) -> None:
    schema = Schema([FeatureSpec("item"), FeatureSpec("hist", kind="sequence", table="item", max_len=3, delimiter="|")], label=None)
    pipe = Pipeline(schema).fit(pa.table({"item": pa.array([1, 2], pa.int64()), "hist": ["1|2", "2"]}))
    path = parquet(tmp_path, pa.table({"item": pa.array([1, 2, 3], pa.int64()), "hist": ["1|2", "", "2|x|1"]}))
    with pytest.raises(ValueError, match=r"data\.parquet: column 'hist', row 2: value 'x' is not an int64 integer"):
        list(pipe.transform(path))
