"""Issue 13, property-based: random columns (types, nulls, empty strings, extreme numbers,
unicode, list lengths), random schemas and random run configs. The only allowed outcomes are
correct ids or one of our named errors (a ``ValueError`` naming the column or key). Bounded by
the ``ci`` profile of tests/conftest.py (``--hypothesis-profile long`` for a deeper run)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from recsys_embed.errors import ConfigError, InputError
from recsys_embed.features import FIRST_VALUE_ID, MISSING_ID, FeatureSpec, Schema
from recsys_embed.hashing import FNV_PRIME, hash_str_arrow, splitmix64_np
from recsys_embed.jobs.config import load_run_config
from recsys_embed.pipelines import Pipeline

INT64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(["", "\x00", "a\x00", "日本語", "🙂", "x" * 9])


@st.composite
def columns(draw: st.DrawFn) -> tuple[pa.Table, bool]:
    """A table with a categorical ``c`` (vocabulary), ``h`` (hashed), a sequence ``s`` and a
    numeric ``x`` column of random types and values, and a 0/1 ``label``; whether the ids
    are strings."""
    rows = draw(st.integers(1, 40))
    strings = draw(st.booleans())
    key = TEXT if strings else INT64
    maybe = st.none() | key
    number = st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**53), 2**53).map(float)
    table = pa.table({
        "c": pa.array(draw(st.lists(maybe, min_size=rows, max_size=rows)), pa.string() if strings else pa.int64()),
        "h": pa.array(draw(st.lists(maybe, min_size=rows, max_size=rows)), pa.string() if strings else pa.int64()),
        "s": pa.array(draw(st.lists(st.none() | st.lists(maybe, max_size=6), min_size=rows, max_size=rows)),
                      pa.list_(pa.string() if strings else pa.int64())),
        "x": pa.array(draw(st.lists(number, min_size=rows, max_size=rows)), pa.float64()),
        "label": pa.array(draw(st.lists(st.integers(0, 1), min_size=rows, max_size=rows)), pa.int64()),
    })  # fmt: skip
    return table, strings


SCHEMA = Schema([
    FeatureSpec("c", embedding_dim=4),
    FeatureSpec("h", ids="hashing", hash_buckets=97, embedding_dim=4),
    FeatureSpec("s", kind="sequence", max_len=4, embedding_dim=4),
    FeatureSpec("x", kind="numeric", transform="standardize"),
])


def _missing(value: object) -> bool:
    return value is None or value == ""


@given(columns())
def test_fit_then_transform_gives_consistent_ids_or_a_named_error(drawn: tuple[pa.Table, bool]) -> None:
    table, _ = drawn
    try:
        pipeline = Pipeline(SCHEMA).fit(table)
        out = pa.Table.from_batches(list(pipeline.transform(table)))
    except ValueError as err:  # our errors are ValueErrors naming the column
        assert isinstance(err, InputError) or "column" in str(err), err
        assert any(f"'{name}'" in str(err) for name in ("c", "h", "s", "x")), err
        return
    assert out.num_rows == table.num_rows
    rows = {name: table.column(name).to_pylist() for name in ("c", "h", "s", "x")}
    ids = {name: out.column(name).to_pylist() for name in ("c", "h", "s")}
    for name in ("c", "h"):
        first_id: dict[object, int] = {}
        for value, got in zip(rows[name], ids[name]):
            if _missing(value):
                assert got == MISSING_ID, (name, value, got)
                continue
            assert FIRST_VALUE_ID <= got < pipeline.num_embeddings[name], (name, value, got)
            assert first_id.setdefault(value, got) == got, (name, value)  # one value, one id
        if name == "c":  # the vocabulary holds every value seen: distinct values, distinct ids
            assert len(set(first_id.values())) == len(first_id)
    for items, got in zip(rows["s"], ids["s"]):
        kept = [v for v in (items or []) if not _missing(v)][-4:]
        assert len(got) == len(kept) and all(g >= FIRST_VALUE_ID for g in got), (items, got)
    values = out.column("x").to_numpy()
    assert np.isfinite(values).all()
    assert not any(v is not None and math.isinf(v) for v in rows["x"])  # an infinite value is an error


@given(columns(), columns())
def test_values_never_seen_in_fitting_get_the_oov_id_never_another_values(fit: tuple[pa.Table, bool], other: tuple[pa.Table, bool]) -> None:
    (train, strings), (score, score_strings) = fit, other
    if strings != score_strings:
        score = score.set_column(0, "c", score.column("c").cast(pa.string()) if strings else pa.array([None] * score.num_rows, pa.int64()))
    table = pa.table({"c": train.column("c"), "label": train.column("label")})
    schema = Schema([FeatureSpec("c", embedding_dim=4)])
    try:
        pipeline = Pipeline(schema).fit(table)
    except ValueError as err:
        assert "hold no value in any of the" in str(err)  # an all-missing column: nothing to fit
        return
    seen = {v for v in train.column("c").to_pylist() if not _missing(v)}
    scored = pa.table({"c": score.column("c"), "label": score.column("label")})
    got = pa.Table.from_batches(list(pipeline.transform(scored))).column("c").to_pylist()
    fitted = dict(zip(train.column("c").to_pylist(), pa.Table.from_batches(list(pipeline.transform(table))).column("c").to_pylist()))
    for value, value_id in zip(score.column("c").to_pylist(), got):
        if _missing(value):
            assert value_id == MISSING_ID
        elif value in seen:
            assert value_id == fitted[value]
        else:
            assert value_id == 1, (value, value_id)  # OOV


def _fnv1a_splitmix(value: bytes, seed: int) -> int:
    h = seed
    for byte in value:
        h = ((h ^ byte) * FNV_PRIME) & (2**64 - 1)
    return int(splitmix64_np(np.array([h], np.uint64))[0])


@given(st.lists(st.text(max_size=30) | st.text(min_size=200, max_size=3000), max_size=80), st.integers(0, 2**64 - 1))
def test_string_hashing_is_fnv1a_whatever_the_mix_of_lengths(values: list[str], seed: int) -> None:
    got = hash_str_arrow(pa.array(values, pa.string()), seed)
    assert got.tolist() == [_fnv1a_splitmix(v.encode(), seed) for v in values]


TRAINER_VALUES = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=4)


@given(st.dictionaries(st.sampled_from(["epochs", "lr", "weight_decay", "patience", "max_steps", "checkpoint_every", "metric", "seed"]),
                       TRAINER_VALUES, max_size=4))  # fmt: skip
def test_a_random_trainer_section_is_valid_or_a_config_error_naming_it(tmp_path_factory: pytest.TempPathFactory, trainer: dict) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": "t.parquet"}, "trainer": trainer}))
    try:
        config = load_run_config(path)
    except ConfigError as err:
        assert "trainer" in str(err), err
        return
    t = config.trainer
    assert t.epochs >= 1 and t.patience >= 1 and t.max_steps >= 0 and t.checkpoint_every >= 0
    assert math.isfinite(t.lr) and t.lr > 0 and math.isfinite(t.weight_decay) and t.weight_decay >= 0


FEATURE_KEYS = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=5)},
    optional={
        "kind": st.sampled_from(["categorical", "numeric", "sequence", "bogus"]),
        "ids": st.sampled_from(["vocabulary", "hashing", "x"]),
        "hash_buckets": st.integers(-2, 50) | st.text(max_size=2),
        "embedding_dim": st.integers(-2, 64) | st.floats() | st.none(),
        "max_len": st.integers(-1, 5),
        "min_count": st.integers(-1, 3),
        "transform": st.sampled_from(["none", "log1p", "bucketize", "standardize", "?"]),
        "num_buckets": st.integers(0, 4),
        "table": st.text(min_size=1, max_size=3),
    },
)


@given(st.lists(FEATURE_KEYS, min_size=1, max_size=4))
def test_a_random_schema_round_trips_or_is_a_named_error(tmp_path_factory: pytest.TempPathFactory, features: list[dict]) -> None:
    path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    path.write_text(yaml.safe_dump({"features": features, "label": "label"}))
    try:
        schema = Schema.load(path)
    except ValueError as err:  # ConfigTypeError (a wrong type) is a ValueError too
        assert str(path) in str(err), err
        return
    assert Schema.from_json(schema.to_json()) == schema and Schema.from_yaml(yaml.safe_dump(schema.to_dict())) == schema


def test_an_all_null_string_column_at_transform_maps_to_the_missing_id(tmp_path: Path) -> None:
    """Evaluation data whose string column is entirely null (Parquet infers no values)."""
    schema = Schema([FeatureSpec("device", embedding_dim=4), FeatureSpec("hist", kind="sequence", max_len=3, embedding_dim=4)])
    train = pa.table({"device": ["ios", "web", "ios"], "hist": [["a"], ["b", "a"], []], "label": [0, 1, 0]})
    pipeline = Pipeline(schema).fit(train)
    a_id = pa.Table.from_batches(list(pipeline.transform(train))).column("hist").to_pylist()[0][0]
    for column in (pa.array([None] * 3, pa.string()), pa.array([None] * 3, pa.large_string()), pa.array([None] * 3, pa.null()),
                   pa.array([None] * 3, pa.string()).dictionary_encode()):  # fmt: skip
        data = tmp_path / "eval.parquet"
        pq.write_table(pa.table({"device": column, "hist": pa.array([None, ["a"], [None]], pa.list_(pa.string())), "label": [1, 0, 1]}), data)
        out = pa.Table.from_batches(list(pipeline.transform(data)))
        assert out.column("device").to_pylist() == [MISSING_ID] * 3, column.type
        assert out.column("hist").to_pylist() == [[], [a_id], []] and a_id >= FIRST_VALUE_ID
