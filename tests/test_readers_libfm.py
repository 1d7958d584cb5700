"""The libFM reader: labels, fields given or inferred, values kept, bad input located."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recsys_embed.pipelines import Pipeline
from recsys_embed.pipelines.readers import libfm_schema, read_libfm


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_same_token_count_makes_each_position_a_field(tmp_path: Path) -> None:
    path = write(tmp_path / "frappe.libfm", ["-1 0:1 7:1 20:1", "1 1:1 8:1 21:0.5", "", "-1 0:1 9:1 20:1"])
    frame = read_libfm(path).collect()
    assert frame.columns == ["label", "field_0", "field_0_value", "field_1", "field_1_value", "field_2", "field_2_value"]
    assert frame["label"].dtype == pl.Int8 and frame["label"].to_list() == [0, 1, 0]
    assert frame["field_1"].to_list() == [7, 8, 9] and frame["field_2_value"].to_list() == [1.0, 0.5, 1.0]
    assert frame.schema["field_0"] == pl.Int64 and frame.schema["field_0_value"] == pl.Float32


def test_varying_counts_infer_index_blocks_and_fields_can_be_given(tmp_path: Path) -> None:
    lines = ["1 2:1 11:1 25:3", "0 3:1 25:2", "0 12:1", "1 0:1 10:1 20:1"]
    path = write(tmp_path / "x.libfm", lines)
    inferred = read_libfm(path).collect()
    assert inferred.select("field_0", "field_1", "field_2").rows() == [(2, 11, 25), (3, None, 25), (None, 12, None), (0, 10, 20)]
    assert inferred["field_2_value"].to_list() == [3.0, 2.0, None, 1.0]
    given = read_libfm(path, fields={"item": (10, 20), "user": range(0, 10), "ctx": range(20, 30)}).collect()
    assert given.columns[1::2] == ["user", "item", "ctx"] and given["item"].to_list() == [11, None, 12, 10]
    assert read_libfm(path, fields=[0, 10, 20, 30]).collect().equals(inferred)


def test_schema_fits_a_pipeline(tmp_path: Path) -> None:
    path = write(tmp_path / "x.libfm", ["1 0:1 5:2", "0 1:1 6:4", "1 0:1 6:1"])
    schema = libfm_schema(2, values=True)
    assert [f.name for f in schema.features] == ["field_0", "field_1", "field_0_value", "field_1_value"]
    state = Pipeline(schema).fit(read_libfm(path)).state
    assert state.tables["field_1"].size == 2 and state.numeric["field_1_value"].mean == pytest.approx(7 / 3)
    assert libfm_schema(["user", "item"]).source_columns == ["user", "item", "label"]


@pytest.mark.parametrize(
    "lines, fields, message",
    [
        (["1 0:1", "2 1:1"], None, r"line 2: label '2' is not -1, 0 or 1"),
        (["-1 0:1", "0 1:1"], None, r"line 2: label 0 in a file that also has -1 labels"),
        (["1 0:1", "0 1:1 x"], None, r"line 2, token 3 'x': expected 'index:value'"),
        (["1 0:1", "0 -4:1"], None, r"line 2, token 2 '-4:1': expected 'index:value'"),
        (["1 0:1", "0 1:abc"], None, r"line 2, token 2 '1:abc'"),
        (["1 0:1 3:1", "0 1:1 0:1"], [0, 2, 4], r"line 2, token 3: index 0 is a second token of field 'field_0'"),
        (["1 0:1 3:1", "0 1:1 9:1"], {"a": (0, 2), "b": (2, 5)}, r"line 2, token 3: index 9 is in no field"),
        (["1 0:1", "0 1:1"], {"a": (0, 2), "b": (1, 5)}, r"fields 'a' and 'b' overlap"),
        (["1 5:1 3:1", "0 1:1"], None, r"fields cannot be inferred; pass fields="),
        ([""], None, r"no data lines"),
    ],
)
def test_bad_input_names_line_and_token(tmp_path: Path, lines: list[str], fields: object, message: str) -> None:
    path = write(tmp_path / "bad.libfm", lines)
    with pytest.raises(ValueError, match=message) as info:
        read_libfm(path, fields=fields)  # type: ignore[arg-type]
    assert str(path) in str(info.value)
