"""Transform: output layout, missing and unseen values, sequences, groups, key types."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.hashing import hash_arrow, seed_of
from recsys_embed.pipelines import Pipeline, lookup, split

TRAIN = pa.table({
    "item": ["b", "a", "b", "c", "b", "a"],
    "hist": pa.array([["a", "b"], ["c"], [], None, ["a", "a", "b", "c"], ["b"]]),
    "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    "label": [1, 0, 1, 0, 0, 1],
    "user": ["u1", "u2", "u1", "u3", "u2", "u1"],
})  # fmt: skip


def schema(group: str | None = "user") -> Schema:
    return Schema(
        [FeatureSpec("item"), FeatureSpec("hist", kind="sequence", table="item", max_len=3), FeatureSpec("x", kind="numeric")],
        label="label",
        group=group,
    )


def test_lookup_and_split_doctests() -> None:
    import doctest

    for module in (lookup, split):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_output_columns_and_types(tmp_path: Path) -> None:
    pq.write_table(TRAIN, tmp_path / "train.parquet")
    pipe = Pipeline(schema()).fit(tmp_path / "train.parquet")
    (out,) = list(pipe.transform(tmp_path / "train.parquet"))
    assert out.schema.names == ["item", "hist", "x", "label", "group"]
    assert [str(t) for t in out.schema.types] == ["int64", "list<item: int64>", "float", "float", "int64"]
    vocab = pipe.state.tables["item"].vocabulary.to_pylist()
    assert vocab == ["b", "a", "c"]  # b 3+3, a 2+2, c 1+2 (hist keeps the last 3: a,b,c of a,a,b,c)
    ids = {v: i + 2 for i, v in enumerate(vocab)}
    assert out.column("item").to_pylist() == [ids[v] for v in TRAIN.column("item").to_pylist()]
    assert out.column("hist").to_pylist() == [[ids["a"], ids["b"]], [ids["c"]], [], [], [ids["a"], ids["b"], ids["c"]], [ids["b"]]]
    assert out.column("label").to_pylist() == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    expected_groups = hash_arrow(TRAIN.column("user").combine_chunks(), seed_of("user")).view(np.int64)
    assert out.column("group").to_numpy().tolist() == expected_groups.tolist()


def test_unseen_values_get_the_oov_id_and_missing_values_id_zero(tmp_path: Path) -> None:
    pipe = Pipeline(schema()).fit(TRAIN)
    new = pa.table({
        "item": ["zzz", None, "", "a", "b\x00", "B"],
        "hist": pa.array([["zzz", "a"], [None, "b"], ["", "c"], ["never", "seen", "ids"], ["a"], []]),
        "x": [None, 1.0, float("nan"), 2.0, 3.0, 4.0],
        "label": [0, 1, 0, 1, 0, 1],
        "user": ["u9", "u1", "u2", "u3", "u4", "u5"],
    })  # fmt: skip
    out = next(pipe.transform(new))
    a, b, c = 3, 2, 4
    assert out.column("item").to_pylist() == [1, 0, 0, a, 1, 1]
    assert out.column("hist").to_pylist() == [[1, a], [b], [c], [1, 1, 1], [a], []]
    assert out.column("x").to_pylist()[:3] == [0.0, 1.0, 0.0]  # fill_value for null and NaN


def test_integer_table_reads_delimited_and_string_columns_as_integers() -> None:
    mixed = Schema(
        [FeatureSpec("item"), FeatureSpec("hist", kind="sequence", table="item", max_len=2, delimiter=";")], label=None
    )
    data = pa.table({"item": pa.array([10, 20, 10], pa.int64()), "hist": ["10;20;30", "", None]})
    pipe = Pipeline(mixed).fit(data)
    assert pipe.state.tables["item"].key_type == "int"
    assert pipe.state.tables["item"].vocabulary.to_pylist() == [10, 20, 30]
    assert next(pipe.transform(data)).column("hist").to_pylist() == [[3, 4], [], []]
    as_text = pa.table({"item": ["20", "99", None], "hist": ["30", "10;99", "20"]})
    out = next(pipe.transform(as_text))
    assert out.column("item").to_pylist() == [3, 1, 0] and out.column("hist").to_pylist() == [[4], [2, 1], [3]]


def test_integer_groups_are_kept_and_labels_are_optional() -> None:
    data = TRAIN.set_column(4, "user", pa.array([7, 8, 7, 9, 8, 7], pa.int64()))
    pipe = Pipeline(schema()).fit(data)
    out = next(pipe.transform(data))
    assert out.column("group").to_pylist() == [7, 8, 7, 9, 8, 7]
    unlabelled = next(pipe.transform(data.drop_columns(["label"]), labels=False))
    assert "label" not in unlabelled.schema.names and unlabelled.num_rows == 6


def test_batch_rows_bounds_the_output_batches() -> None:
    pipe = Pipeline(schema(group=None)).fit(TRAIN)
    sizes = [b.num_rows for b in pipe.transform(TRAIN, batch_rows=4)]
    assert sizes == [4, 2]


def test_hash_index_finds_every_key_across_growth_and_probe_chains() -> None:
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 2**63, 50_000).astype(np.uint64) & np.uint64(0xFFFF_FFFF_FFFF_F000))  # low bits collide
    ids = np.arange(2, 2 + keys.size)
    index = lookup.HashIndex(keys[:100], ids[:100])
    for start in range(100, keys.size, 7_000):  # grows several times
        index.insert(keys[start : start + 7_000], ids[start : start + 7_000])
    assert index.get(keys).tolist() == ids.tolist()
    assert not index.get(keys + np.uint64(1)).any()


def test_string_index_is_exact_for_short_long_and_look_alike_strings() -> None:
    rng = np.random.default_rng(0)
    pieces = ["", "a", "\x00", "\x01", "\x08", "\t", "é", "1234567", "abcdefgh", "z"]
    pool = sorted({"".join(pieces[i] for i in rng.integers(0, len(pieces), rng.integers(1, 5))) for _ in range(3000)} - {""})
    known = pool[::2]
    index = lookup.StringIndex(pa.array(known), np.arange(2, 2 + len(known)))
    ids = {v: i + 2 for i, v in enumerate(known)}
    query = pa.array(pool + [None] + known[::-1], pa.large_string())
    assert index.get(query).tolist() == [ids.get(v, 0) for v in pool] + [0] + [ids[v] for v in known[::-1]]
    assert {"a", "a\x00", "a\x00\x00"} <= set(pool)  # equal words, other lengths
    assert any(len(v.encode()) == 8 and v.encode()[-1] < 9 for v in pool)  # 8 bytes ending in a low byte: hashed
    assert any(len(v.encode()) < 8 for v in known) and any(len(v.encode()) > 8 for v in known)


def test_values_hidden_under_nulls_are_ignored() -> None:
    """Arrow leaves the slot under a null undefined: an infinity or an out-of-range dictionary
    index there must neither raise nor leak into ids, counts or stats."""
    hidden = np.array([False, True, False, True, False])
    values = pa.array(np.array([1.0, np.inf, 3.0, np.nan, 1.0]), mask=hidden)
    items = pa.DictionaryArray.from_arrays(pa.array(np.array([0, 99, 1, -7, 0], np.int32), mask=hidden), pa.array(["a", "b"]))
    data = pa.table({"item": items, "x": values})
    spec = Schema([FeatureSpec("item"), FeatureSpec("x", kind="numeric", transform="standardize")], label=None)
    pipe = Pipeline(spec).fit(data)
    assert pipe.state.tables["item"].vocabulary.to_pylist() == ["a", "b"]  # a twice, b once
    assert pipe.state.numeric["x"].mean == pytest.approx(5 / 5)  # 1, fill 0, 3, fill 0, 1
    out = next(pipe.transform(data))
    assert out.column("item").to_pylist() == [2, 0, 3, 0, 2]
