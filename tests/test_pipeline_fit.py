"""Fit: vocabularies shared by a table group, min_count/max_size, stable hashing, numeric
stats and buckets, any source format, save/load."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.pipelines import FittedState, Pipeline, fit, named, pipeline, prefetch, sources, state

ITEMS = [5, 7, 5, None, 9, 7, 5, 11]
HISTORY = [[7, 9], [], [5, 5, 9, 13], None, [13], [9, 9], [7], [5, 7]]


def write_rows(folder: Path) -> Path:
    """Two Parquet files in a folder: categorical ints, a list sequence, numbers, label, user."""
    folder.mkdir(parents=True, exist_ok=True)
    price = [1.0, None, 3.0, 10.0, 0.0, 2.5, -4.0, 8.0]
    users = ["u1", "u2", "u1", "u3", "u2", "u1", "u4", "u3"]
    table = pa.table({"item_id": pa.array(ITEMS, pa.int64()), "hist": pa.array(HISTORY, pa.list_(pa.int64())),
                      "price": price, "label": [1, 0, 0, 1, 0, 1, 0, 0], "user": users})  # fmt: skip
    pq.write_table(table.slice(0, 5), folder / "a.parquet", row_group_size=2)
    pq.write_table(table.slice(5), folder / "b.parquet")
    return folder


def schema(**item_options) -> Schema:
    return Schema(
        [
            FeatureSpec("item_id", **item_options),
            FeatureSpec("hist", kind="sequence", table="item_id", max_len=3, **item_options),
            FeatureSpec("price", kind="numeric", transform="log1p_standardize"),
            FeatureSpec("price_bucket", kind="numeric", source="price", transform="bucketize", num_buckets=4),
        ],
        label="label",
        group="user",
    )


def assert_same_state(a: FittedState, b: FittedState) -> None:
    """Equal ids and boundaries; mean/std equal up to float summation order."""
    assert a.tables == b.tables and a.rows == b.rows and a.numeric.keys() == b.numeric.keys()
    for name, stats in a.numeric.items():
        other = b.numeric[name]
        assert stats.boundaries == other.boundaries and stats.count == other.count
        assert stats.mean == pytest.approx(other.mean, rel=1e-12) and stats.std == pytest.approx(other.std, rel=1e-12)


def test_module_doctests() -> None:
    for module in (pipeline, sources, state, fit, prefetch, named):
        assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0, module.__name__


def test_vocabulary_is_counted_over_every_column_of_the_table_group(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "data")
    pipe = Pipeline(schema()).fit(data)
    # item_id: 5 x3, 7 x2, 9, 11; hist keeps the last 3 items: [7,9] [5,9,13] [13] [9,9] [7] [5,7]
    # totals: 5 x5, 7 x5, 9 x5, 13 x2, 11 x1 -> count descending, ties by value
    assert pipe.state.tables["item_id"].vocabulary.to_pylist() == [5, 7, 9, 13, 11]
    assert pipe.num_embeddings == {"item_id": 7, "price_bucket": 6}
    assert pipe.state.rows == 8


def test_min_count_and_max_size_keep_the_most_frequent(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "data")
    assert Pipeline(schema(min_count=3)).fit(data).state.tables["item_id"].vocabulary.to_pylist() == [5, 7, 9]
    assert Pipeline(schema(max_size=2)).fit(data).state.tables["item_id"].vocabulary.to_pylist() == [5, 7]


def test_fit_is_independent_of_batch_size_and_source_layout(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "data")
    whole = pa.concat_tables([pq.read_table(p) for p in sorted(data.glob("*.parquet"))])
    reference = Pipeline(schema()).fit(data).state
    assert_same_state(Pipeline(schema()).fit(data, batch_rows=1).state, reference)
    assert Pipeline(schema()).fit(str(data / "*.parquet")).state == reference
    assert Pipeline(schema()).fit([data / "a.parquet", data / "b.parquet"]).state == reference
    assert_same_state(Pipeline(schema()).fit(whole).state, reference)


def test_text_files_with_delimited_sequences_fit_like_parquet(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "data")
    whole = pa.concat_tables([pq.read_table(p) for p in sorted(data.glob("*.parquet"))])
    joined = ["|".join(map(str, h)) if h is not None else None for h in HISTORY]
    text = whole.set_column(1, "hist", pa.array(joined, pa.string()))
    for name, delimiter in (("rows.csv", ","), ("rows.tsv", "\t")):
        pacsv.write_csv(text, tmp_path / name, pacsv.WriteOptions(delimiter=delimiter))
    text_schema = Schema.from_dict(schema().to_dict())
    text_schema["hist"].delimiter = "|"
    parquet_state = Pipeline(schema()).fit(data).state
    for name in ("rows.csv", "rows.tsv"):
        fitted = Pipeline(text_schema).fit(tmp_path / name).state
        # CSV columns are read as text: the vocabulary holds the same values as strings
        assert fitted.tables["item_id"].vocabulary.to_pylist() == ["5", "7", "9", "13", "11"]
        assert_same_state(FittedState("", {}, parquet_state.numeric), FittedState("", {}, fitted.numeric))


def test_numeric_stats_standardize_and_quantile_buckets(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "data")
    pipe = Pipeline(schema()).fit(data)
    price = np.array([1.0, 0.0, 3.0, 10.0, 0.0, 2.5, 0.0, 8.0])  # null filled with 0, -4 clipped to 0
    logged = np.log1p(price).astype(np.float32)
    stats = pipe.state.numeric["price"]
    assert stats.mean == pytest.approx(logged.mean(), rel=1e-6) and stats.std == pytest.approx(logged.std(), rel=1e-6)
    out = pa.Table.from_batches(list(pipe.transform(data)))
    dense = out.column("price").to_numpy()
    assert dense.dtype == np.float32 and abs(dense.mean()) < 1e-6 and dense.std() == pytest.approx(1.0, rel=1e-5)
    # raw price for buckets: null -> 0, -4 stays; quartile cut points of 8 values
    raw = np.array([1.0, 0.0, 3.0, 10.0, 0.0, 2.5, -4.0, 8.0])
    cuts = np.quantile(raw, [0.25, 0.5, 0.75], method="inverted_cdf")
    assert pipe.state.numeric["price_bucket"].boundaries == cuts.tolist()
    assert out.column("price_bucket").to_pylist() == (np.searchsorted(cuts, raw, side="right") + 2).tolist()


def test_hashed_ids_are_pinned(tmp_path: Path) -> None:
    """Golden ids: a change here remaps every hashed id between training and scoring."""
    hashed = Schema([FeatureSpec("n", ids="hashing", hash_buckets=1000), FeatureSpec("s", ids="hashing", hash_buckets=1 << 20)], label=None)
    table = pa.table({"n": pa.array([0, 1, 42, -7, 2**62, None], pa.int64()), "s": ["a", "item_42", "é", "68fd1e64", "", None]})
    pipe = Pipeline(hashed).fit(table)
    out = next(pipe.transform(table))
    assert out.column("n").to_pylist() == [258, 645, 718, 807, 926, 0]
    assert out.column("s").to_pylist() == [752373, 802759, 152045, 128633, 0, 0]
    assert pipe.state.tables["s"].seed == 12638206991764949794  # seed_of("s"): the default salt is the table name
    assert pipe.num_embeddings == {"n": 1002, "s": (1 << 20) + 2}


def test_save_load_and_state_round_trip_give_identical_ids(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "data")
    pipe = Pipeline(schema()).fit(data)
    path = pipe.save(tmp_path / "pipeline")
    assert [p.name for p in tmp_path.iterdir() if p.name != "data"] == ["pipeline"]  # no temporary left
    loaded = Pipeline.load(path)
    arrays, config = pipe.export_state()
    json.dumps(config)  # JSON-safe
    again = Pipeline.from_state(arrays, json.loads(json.dumps(config)))
    assert loaded.state == pipe.state == again.state and loaded.schema == pipe.schema
    before = pa.Table.from_batches(list(pipe.transform(data)))
    assert pa.Table.from_batches(list(loaded.transform(data))).equals(before)
    assert pa.Table.from_batches(list(again.transform(data))).equals(before)
    assert FittedState.from_state(*pipe.state.export_state()) == pipe.state


def test_unfitted_pipeline_says_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not fitted; call fit\(source\)"):
        Pipeline(schema()).transform(tmp_path)


def test_vocabulary_order_is_count_then_byte_order_for_look_alike_strings() -> None:
    """count_order sorts strings on their first 8 bytes in numpy; NUL padding, long strings
    sharing a prefix, non-ASCII bytes and large counts must still give Arrow's exact order."""
    import pyarrow.compute as pc

    rng = np.random.default_rng(0)
    pieces = ["a", "b", "\x00", "\x01", "é", "abcdefgh", "abcdefghi", "zz"]
    values = sorted({"".join(pieces[i] for i in rng.integers(0, len(pieces), rng.integers(1, 5))) for _ in range(2000)})
    values = [values[i] for i in rng.permutation(len(values))]
    counts = rng.choice([1, 2, 70_000], len(values))
    for column in (pa.array(values), pa.array(values, pa.large_string()).slice(1), pa.array(np.arange(len(values)) * 7 - 99)):
        c = counts[-len(column) :]
        expected = pc.sort_indices(pa.table({"c": c, "v": column}), sort_keys=[("c", "descending"), ("v", "ascending")])
        assert fit.count_order(column, c).tolist() == expected.to_pylist()


def _as_batches(values: list, value_type: pa.DataType) -> list[pa.Array]:
    """``values`` cut into batches of the shapes the counter meets: empty, plain and, for
    strings, dictionary-encoded with unused entries (a sliced row group) or all null."""
    strings = pa.types.is_string(value_type)
    batches = [pa.array([], value_type)]
    for start in range(0, len(values), 7):
        chunk = pa.array(values[start : start + 7], value_type)
        if strings and start % 2:
            chunk = pa.concat_arrays([pa.array(["u", "x"], value_type), chunk]).dictionary_encode().slice(2)
        batches.append(chunk)
    if strings:
        batches.append(pa.DictionaryArray.from_arrays(pa.array([None, None], pa.int32()), pa.array(["only-null"])))
    return batches


@pytest.mark.parametrize(
    "pool",
    [
        ["a", "b", "ab", "é", "a\x00b", "zzzzzzzz", "0f3a9c1e"],  # every string has a key
        ["a", "ab", "é", "abcdefghi", "a\x00", "a\x00\x00", "long values of many bytes"],  # keys, then strings
        [-(2**63), -7, 0, 3, 2**63 - 1, 10**12],  # int64 ids
    ],
)
def test_vocabulary_counter_equals_a_plain_count_whatever_the_merges(pool: list) -> None:
    """Counted by key, by exact string, or by key and then (from the first string without a
    key, after some merges: merge_rows=4) by string, the vocabulary is the plain count
    ordered by descending count, then value (bytes)."""
    from collections import Counter

    strings = isinstance(pool[0], str)
    rng = np.random.default_rng(1)
    draws = np.sort(rng.zipf(1.5, 300) % len(pool))  # the values without a key come last
    values = [None if rng.random() < 0.05 else pool[i] for i in draws]
    counts = Counter(v for v in values if v is not None)
    for min_count, max_size in ((1, None), (2, 3)):
        counter = fit.VocabularyCounter(merge_rows=4)
        for batch in _as_batches(values, pa.string() if strings else pa.int64()):
            counter.add(batch)
        vocab = counter.vocabulary(min_count, max_size, pa.large_string() if strings else pa.int64())
        kept = [v for v, c in counts.items() if c >= min_count]
        expected = sorted(kept, key=lambda v: (-counts[v], v.encode() if strings else v))[:max_size]
        assert vocab.to_pylist() == expected


def test_value_keys_order_strings_by_bytes_and_give_them_back() -> None:
    strings = pa.array(["b", "", "é", "a\x00b", "\x01", "zzzzzzzz", "a", "abcdefgh", "ab"], pa.large_string())
    keys = fit.value_keys(strings)
    assert keys is not None
    assert strings.take(np.argsort(keys)).to_pylist() == sorted(strings.to_pylist(), key=str.encode)
    assert fit.key_values(keys, pa.large_string()).equals(strings)
    assert fit.value_keys(pa.array(["ok", "NUL\x00"])) is None and fit.value_keys(pa.array(["ok", "123456789"])) is None
    fixed_width = ["12345678", "87654321"]
    assert fit.value_keys(pa.array(fixed_width)).tolist() == [int(s.encode().hex(), 16) for s in fixed_width]
