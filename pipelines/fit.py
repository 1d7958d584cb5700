"""Fitting: one streaming pass over the data that learns vocabularies and numeric stats.

Memory is bounded by the distinct values of the vocabulary groups (plus one record batch and
a fixed-size sample per bucketized feature), never by the number of rows:

* vocabularies: exact counts, merged batch by batch. Parquet string columns arrive
  dictionary-encoded, so a batch is counted with ``np.bincount`` over its dictionary
  indices; other columns with Arrow's ``value_counts``. Partial counts are merged by a
  polars group-by whenever they outgrow the merged counts (amortised linear). Then values
  seen at least ``min_count`` times are kept, the ``max_size`` most frequent, ids ``2..``
  by descending count, ties broken by ascending value (byte order): the table groups' last
  merges run as one parallel polars query, then :func:`count_order` sorts each in numpy
  (a value sort, then a stable radix sort on count ranks).
* numeric mean and std: streamed with the parallel (Chan et al.) update in float64 over
  every row after fill and ``log1p``, so standardising gives exactly mean 0 and std 1 on the
  fitted data as the model sees it (nulls filled).
* quantile boundaries of bucketized features: exact quantiles of a deterministic uniform
  sample of ``SAMPLE_SIZE`` rows (bottom-k of a stable hash of the row index), so the same
  data gives the same boundaries whatever the batch size; below ``SAMPLE_SIZE`` rows they are
  the exact quantiles of the data. Rank error of the approximation: about 1/sqrt(SAMPLE_SIZE).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from recsys_embed.features import FeatureKind, FeatureSpec, IdStrategy, NumericTransform, Schema
from recsys_embed.hashing import hash_int_np, seed_of
from recsys_embed.pipelines.columns import (
    Where,
    byte_word,
    check_type,
    key_type_of,
    keys,
    numeric_values,
    numpy_view,
    sequence_keys,
    string_bytes,
)
from recsys_embed.pipelines.prefetch import prefetch
from recsys_embed.pipelines.sources import ReadSpec, Shard, read_shard
from recsys_embed.pipelines.state import FittedState, NumericState, TableState

SAMPLE_SIZE = 100_000


class VocabularyCounter:
    """Exact counts of the values of one table group, accumulated batch by batch.

    Each batch is first reduced to (value, count) pairs: ``np.bincount`` over the indices of
    a dictionary-encoded batch (Parquet string columns), Arrow's ``value_counts`` otherwise.
    The pairs wait as they are and are merged by one polars group-by (exact equality of
    values) whenever they outnumber both the distinct values merged so far and
    ``MERGE_ROWS``: amortised linear work, memory about twice the distinct values.
    :meth:`grouped` is the last merge, left lazy so that all table groups merge in one
    parallel query (:func:`vocabularies`).
    """

    MERGE_ROWS = 1 << 18

    def __init__(self) -> None:
        self._merged: pl.DataFrame | None = None
        self._values: list[pa.Array] = []
        self._counts: list[np.ndarray] = []
        self._pending_rows = 0

    def add(self, keys: pa.Array) -> None:
        """Count the non-null values of ``keys`` (int64 or string, maybe dictionary-encoded)."""
        if pa.types.is_dictionary(keys.type):
            indices, valid = numpy_view(keys.indices)
            if valid is not None:  # null slots hold arbitrary indices: count them as index 0, then take them back
                indices = np.where(valid, indices, 0)
            counts = np.bincount(indices, minlength=len(keys.dictionary))
            if valid is not None:
                counts[0] -= len(valid) - np.count_nonzero(valid)
            values = keys.dictionary  # unused entries (count 0) and null values go at the merge
        else:
            table = pc.value_counts(keys.drop_null())
            values, counts = table.field("values"), table.field("counts").to_numpy()
        if not len(values):
            return
        self._values.append(values)
        self._counts.append(counts.astype(np.int64, copy=False))
        self._pending_rows += len(values)
        if self._pending_rows > max(self.MERGE_ROWS, 0 if self._merged is None else self._merged.height):
            self._merged = self.grouped().collect()
            self._values, self._counts, self._pending_rows = [], [], 0

    def grouped(self) -> pl.LazyFrame:
        """Every value counted so far once, with its total count: columns ``v``, ``c``."""
        frames = [] if self._merged is None else [self._merged.lazy()]
        if self._values:
            values = self._values
            if len({v.type for v in values}) > 1:  # e.g. string and large_string
                values = [v.cast(pa.large_string()) for v in values]
            pairs = pa.table({"v": pa.chunked_array(values), "c": np.concatenate(self._counts)})
            frames.append(pl.from_arrow(pairs).lazy().filter(pl.col("v").is_not_null() & (pl.col("c") > 0)))
        if not frames:
            return pl.LazyFrame(schema={"v": pl.String, "c": pl.Int64})
        return pl.concat(frames).group_by("v").agg(pl.col("c").sum())


def vocabularies(
    counters: dict[str, VocabularyCounter], specs: dict[str, FeatureSpec], value_types: dict[str, pa.DataType]
) -> dict[str, pa.Array]:
    """The vocabulary of each counted table group (``specs`` gives its ``min_count`` and
    ``max_size``): the counts merged by one parallel polars query, then ordered by
    :func:`count_order` in threads (numpy and Arrow release the GIL); the counters are
    emptied."""
    tables = list(counters)
    frames = dict(zip(tables, pl.collect_all([counters.pop(t).grouped() for t in tables])))

    def vocabulary(table: str) -> pa.Array:
        frame = frames.pop(table).filter(pl.col("c") >= specs[table].min_count)
        values = frame["v"].to_arrow().cast(value_types[table])
        return values.take(count_order(values, frame["c"].to_numpy())[: specs[table].max_size])

    with ThreadPoolExecutor(max_workers=max(1, min(len(tables), os.cpu_count() or 1))) as pool:
        return dict(zip(tables, pool.map(vocabulary, tables)))


def count_order(values: pa.Array, counts: np.ndarray) -> np.ndarray:
    """Positions of distinct ``values`` by descending count, ties by ascending value (byte
    order for strings): the values are sorted once, then stably by count rank (a 16-bit key,
    which numpy radix-sorts).

        >>> count_order(pa.array(["b", "abcdefghij", "abcdefghi", "a", "c"]), np.array([1, 2, 2, 2, 5])).tolist()
        [4, 3, 2, 1, 0]
    """
    order = _value_order(values)
    distinct, ranks = np.unique(-counts, return_inverse=True)  # rank 0: the highest count
    ranks = ranks.astype(np.uint16 if len(distinct) <= 1 << 16 else np.int64)
    return order[np.argsort(ranks[order], kind="stable")]


def _value_order(values: pa.Array) -> np.ndarray:
    """Positions of distinct ``values`` in ascending order. Strings are sorted in numpy on
    their first 8 bytes (a big-endian integer, zero padded); the runs sharing those (strings
    longer than 8 bytes, or differing only by trailing NUL bytes) are re-sorted by Arrow."""
    if pa.types.is_integer(values.type):
        return np.argsort(values.to_numpy())
    data, starts, lengths = string_bytes(values)
    prefix = byte_word(data, starts, lengths, 0).byteswap()  # first 8 bytes, in byte order
    order = np.argsort(prefix)
    tie = prefix[order[1:]] == prefix[order[:-1]]
    if tie.any():
        at = np.flatnonzero(np.append(tie, False) | np.insert(tie, 0, False))
        members = order[at]
        order[at] = members[pc.sort_indices(values.take(members)).to_numpy()]
    return order


class RowSample:
    """A deterministic uniform sample of at most ``size`` values: those of the rows whose row
    index has the smallest stable hash (bottom-k sampling), whatever the batch boundaries."""

    def __init__(self, salt: str, size: int = SAMPLE_SIZE) -> None:
        self.size = size
        self._seed = seed_of(salt)
        self.values: np.ndarray | None = None
        self._priority = np.zeros(0, np.uint64)

    def add(self, values: np.ndarray, row_ids: np.ndarray) -> None:
        priority = hash_int_np(row_ids, self._seed)
        if self._priority.size >= self.size:
            below = priority < self._priority.max()
            values, priority = values[below], priority[below]
        self.values = values if self.values is None else np.concatenate([self.values, values])
        self._priority = np.concatenate([self._priority, priority])
        if self._priority.size > self.size:
            keep = np.argpartition(self._priority, self.size - 1)[: self.size]
            self.values, self._priority = self.values[keep], self._priority[keep]

    def quantiles(self, fractions: np.ndarray) -> np.ndarray:
        """The sample's quantiles (``inverted_cdf``: each is a sampled value)."""
        if self.values is None or self.values.size == 0:
            raise ValueError("no values sampled")
        return np.quantile(self.values, fractions, method="inverted_cdf")


class NumericAccumulator:
    """Streamed count, mean and variance (float64), and a :class:`RowSample` for quantiles."""

    def __init__(self, name: str, sample: bool) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self._sample = RowSample(name) if sample else None

    def add(self, values: np.ndarray, row_ids: np.ndarray) -> None:
        n = values.size
        if n == 0:
            return
        mean = float(values.mean(dtype=np.float64))
        m2 = float(np.square(values - mean, dtype=np.float64).sum())
        delta = mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        if self._sample is not None:
            self._sample.add(values.astype(np.float64, copy=False), row_ids)

    def state(self, num_buckets: int) -> NumericState:
        std = float(np.sqrt(self.m2 / self.count)) if self.count else 1.0
        boundaries: list[float] = []
        if self._sample is not None:
            boundaries = self._sample.quantiles(np.arange(1, num_buckets) / num_buckets).tolist()
        return NumericState(mean=self.mean, std=std if std > 0 else 1.0, boundaries=boundaries, count=self.count)


def read_spec(schema: Schema, with_targets: bool) -> ReadSpec:
    """The columns (and text-file types) the pipeline reads; ``with_targets`` adds label and group."""
    types: dict[str, pa.DataType] = {}
    for spec in schema.features:
        types[spec.source] = pa.float64() if spec.kind is FeatureKind.NUMERIC else pa.large_string()  # type: ignore[index]
    if with_targets:
        if schema.label:
            types[schema.label] = pa.float64()
        if schema.group:
            types.setdefault(schema.group, pa.large_string())
    dictionary = tuple(s.source for s in schema.features if s.kind is FeatureKind.CATEGORICAL)
    if with_targets and schema.group:
        dictionary += (schema.group,)
    return ReadSpec(columns=tuple(types), text_types=tuple(types.items()), dictionary=dictionary)  # type: ignore[arg-type]


def read_shards(shards: list[Shard], spec: ReadSpec, batch_rows: int) -> Iterator[tuple[Shard, int, pa.RecordBatch]]:
    """``(shard, first_row, batch)`` for every record batch of ``shards``, in order."""
    for shard in shards:
        for first_row, batch in read_shard(shard, spec, batch_rows):
            yield shard, first_row, batch


def fit_state(schema: Schema, shards: list[Shard], batch_rows: int = 262_144, progress: bool = False) -> FittedState:
    """Learn the :class:`FittedState` of ``schema`` in one pass over ``shards``."""
    spec = read_spec(schema, with_targets=False)
    key_types: dict[str, str] = {}
    counters = {
        t: VocabularyCounter()
        for t, specs in schema.tables.items()
        if specs[0].ids is IdStrategy.VOCABULARY and specs[0].kind is not FeatureKind.NUMERIC
    }
    numeric = {
        f.name: NumericAccumulator(f.name, sample=f.transform is NumericTransform.BUCKETIZE)
        for f in schema.features
        if f.kind is FeatureKind.NUMERIC
    }
    present = {f.name: 0 for f in schema.features}
    known = [s.num_rows for s in shards]
    total = None if None in known else sum(known)  # type: ignore[arg-type]
    rows = 0
    with tqdm(total=total, unit="rows", unit_scale=True, desc="fit", disable=not progress) as bar:
        for shard, first_row, batch in prefetch(read_shards(shards, spec, batch_rows)):
            row_ids = np.arange(rows, rows + batch.num_rows, dtype=np.int64)
            for feature in schema.features:
                column = batch.column(feature.source)
                where = Where(shard.name, feature.source, first_row)  # type: ignore[arg-type]
                check_type(feature, column.type, where)
                if feature.kind is FeatureKind.NUMERIC:
                    values, missing = numeric_values(column, feature, where)
                    numeric[feature.name].add(values, row_ids)
                    present[feature.name] += len(values) - int(missing.sum())
                    continue
                table = feature.table
                if table not in key_types and key_type_of(column.type) is not None:
                    group_types = {key_type_of(batch.column(f.source).type) for f in schema.tables[table]}  # type: ignore[index]
                    key_types[table] = "int" if "int" in group_types else "str"  # type: ignore[index]
                if table not in key_types:
                    continue  # an all-null column: nothing to learn yet
                key_type = key_types[table]  # type: ignore[index]
                if feature.is_sequence:
                    _, values = sequence_keys(column, feature, key_type, where)
                else:
                    values = keys(column, key_type, where)
                present[feature.name] += len(values) - values.null_count
                if table in counters:
                    counters[table].add(values)  # type: ignore[index]
            rows += batch.num_rows
            bar.update(batch.num_rows)
    names = ", ".join(sorted({s.name for s in shards}))
    if rows == 0:
        raise ValueError(f"no rows to fit in {names}")
    empty = [f"{f.source!r} (feature {f.name!r})" for f in schema.features if present[f.name] == 0]
    if empty:
        raise ValueError(f"column(s) {', '.join(empty)} hold no value in any of the {rows} rows of {names}; nothing to fit")
    return FittedState(
        schema_fingerprint=schema.fingerprint(),
        tables=_table_states(schema, key_types, counters),
        numeric={name: acc.state(schema[name].num_buckets) for name, acc in numeric.items()},
        rows=rows,
    )


def _table_states(schema: Schema, key_types: dict[str, str], counters: dict[str, VocabularyCounter]) -> dict[str, TableState]:
    owners = {t: schema.tables[t][0] for t in counters}
    value_types = {t: pa.int64() if key_types[t] == "int" else pa.large_string() for t in counters}
    vocabs = vocabularies(counters, owners, value_types)
    states = {}
    for table, specs in schema.tables.items():
        owner = specs[0]
        if owner.transform is NumericTransform.BUCKETIZE:
            states[table] = TableState("buckets", size=owner.num_buckets)
        elif owner.ids is IdStrategy.HASHING:
            states[table] = TableState("hashing", key_types[table], seed=seed_of(owner.salt), size=owner.hash_buckets)
        else:
            states[table] = TableState("vocabulary", key_types[table], vocabulary=vocabs[table])
    return states
