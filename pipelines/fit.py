"""Fitting: one streaming pass over the data that learns vocabularies and numeric stats.

Memory is bounded by the distinct values of the vocabulary groups (plus one record batch and
a fixed-size sample per bucketized feature), never by the number of rows:

* vocabularies: exact counts, merged batch by batch. Parquet string columns arrive
  dictionary-encoded, so a batch is counted with ``np.bincount`` over its dictionary
  indices; other columns with Arrow's ``value_counts``. Partial counts are merged with an
  Arrow hash aggregation whenever they outgrow the merged table (amortised linear). Then
  values seen at least ``min_count`` times are kept, the ``max_size`` most frequent, ids
  ``2..`` by descending count, ties broken by ascending value.
* numeric mean and std: streamed with the parallel (Chan et al.) update in float64 over
  every row after fill and ``log1p``, so standardising gives exactly mean 0 and std 1 on the
  fitted data as the model sees it (nulls filled).
* quantile boundaries of bucketized features: exact quantiles of a deterministic uniform
  sample of ``SAMPLE_SIZE`` rows (bottom-k of a stable hash of the row index), so the same
  data gives the same boundaries whatever the batch size; below ``SAMPLE_SIZE`` rows they are
  the exact quantiles of the data. Rank error of the approximation: about 1/sqrt(SAMPLE_SIZE).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from recsys_embed.features import FeatureKind, IdStrategy, NumericTransform, Schema
from recsys_embed.hashing import hash_int_np, hash_str_arrow, seed_of, splitmix64_np
from recsys_embed.pipelines.columns import Where, check_type, key_type_of, keys, numeric_values, sequence_keys
from recsys_embed.pipelines.lookup import HashIndex
from recsys_embed.pipelines.sources import ReadSpec, Shard, read_shard
from recsys_embed.pipelines.state import FittedState, NumericState, TableState

SAMPLE_SIZE = 100_000
COUNT_SEED = seed_of("vocabulary-count")


class VocabularyCounter:
    """Exact counts of the values of one table group, accumulated batch by batch.

    Each batch is first reduced to (distinct value, count) pairs; the pairs are then added
    to running counts found through a :class:`HashIndex` on a 64-bit key of the value
    (``splitmix64`` of an integer, a bijection; a seeded stable hash of a string, every hit
    confirmed by comparing the strings, and the astronomically rare colliding string counted
    apart). Work per batch grows with its distinct values, never with the values seen before.
    """

    def __init__(self) -> None:
        self._index: HashIndex | None = None
        self._values: list[pa.Array] = []  # each distinct value once, in order of first sight
        self._counts = np.zeros(1024, np.int64)
        self._size = 0
        self._collided: dict[str, int] = {}

    def add(self, keys: pa.Array) -> None:
        """Count the non-null values of ``keys`` (int64 or string, maybe dictionary-encoded)."""
        if pa.types.is_dictionary(keys.type):
            counts = np.bincount(keys.indices.drop_null().to_numpy(), minlength=len(keys.dictionary))
            seen = counts > 0
            values, counts = keys.dictionary.filter(pa.array(seen)), counts[seen]
        else:
            table = pc.value_counts(keys.drop_null())
            values, counts = table.field("values"), table.field("counts").to_numpy()
        if values.null_count:
            valid = pc.is_valid(values)
            values, counts = values.filter(valid), counts[valid.to_numpy(zero_copy_only=False)]
        if pa.types.is_string(values.type) or pa.types.is_string_view(values.type):
            values = values.cast(pa.large_string())
        if len(values):
            self._add(values, counts.astype(np.int64))

    def _add(self, values: pa.Array, counts: np.ndarray) -> None:
        strings = not pa.types.is_integer(values.type)
        hashes = hash_str_arrow(values, COUNT_SEED) if strings else splitmix64_np(values.to_numpy().view(np.uint64))
        if self._index is None:
            self._index = HashIndex(np.zeros(0, np.uint64), np.zeros(0, np.int64))
        slots = self._index.get(hashes) - 1  # ids are slot + 1, 0 = unseen
        found = np.flatnonzero(slots >= 0)
        if strings and found.size:
            known = pa.chunked_array(self._values).take(pa.array(slots[found]))
            same = pc.equal(known, values.take(pa.array(found))).to_numpy(zero_copy_only=False)
            for i in found[~same]:  # a 64-bit hash collision between two different strings
                self._collided[values[int(i)].as_py()] = self._collided.get(values[int(i)].as_py(), 0) + int(counts[i])
            found = found[same]
        self._counts[slots[found]] += counts[found]
        new = np.flatnonzero(slots < 0)
        new_hashes, first = np.unique(hashes[new], return_index=True)
        for i in np.setdiff1d(new, new[first]):  # a collision among this batch's new strings
            self._collided[values[int(i)].as_py()] = self._collided.get(values[int(i)].as_py(), 0) + int(counts[i])
        new = new[first]
        new_slots = np.arange(self._size, self._size + new.size)
        self._index.insert(new_hashes, new_slots + 1)
        self._values.append(values.take(pa.array(new)))
        if self._size + new.size > self._counts.size:
            self._counts = np.concatenate([self._counts, np.zeros(max(self._counts.size, new.size), np.int64)])
        self._counts[new_slots] = counts[new]
        self._size += new.size

    def vocabulary(self, min_count: int, max_size: int | None, value_type: pa.DataType) -> pa.Array:
        """Values seen ``min_count`` times or more, most frequent first (ties by value),
        at most ``max_size``."""
        values = pa.chunked_array(self._values + [pa.array(list(self._collided), value_type)], value_type)
        counts = np.concatenate([self._counts[: self._size], np.array(list(self._collided.values()), np.int64)])
        table = pa.table({"v": values, "c": counts})
        table = table.filter(pc.greater_equal(table["c"], min_count))
        order = pc.sort_indices(table, sort_keys=[("c", "descending"), ("v", "ascending")])
        if max_size is not None:
            order = order[:max_size]
        return table["v"].take(order).combine_chunks().cast(value_type)


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


def fit_state(schema: Schema, shards: list[Shard], batch_rows: int = 262_144, progress: bool = False) -> FittedState:
    """Learn the :class:`FittedState` of ``schema`` in one pass over ``shards``."""
    spec = read_spec(schema, with_targets=False)
    key_types: dict[str, str] = {}
    counters = {t: VocabularyCounter() for t, specs in schema.tables.items() if specs[0].ids is IdStrategy.VOCABULARY}
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
        for shard in shards:
            for first_row, batch in read_shard(shard, spec, batch_rows):
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
    states = {}
    for table, specs in schema.tables.items():
        owner = specs[0]
        if owner.transform is NumericTransform.BUCKETIZE:
            states[table] = TableState("buckets", size=owner.num_buckets)
        elif owner.ids is IdStrategy.HASHING:
            states[table] = TableState("hashing", key_types[table], seed=seed_of(owner.salt), size=owner.hash_buckets)
        else:
            value_type = pa.int64() if key_types[table] == "int" else pa.large_string()
            vocabulary = counters.pop(table).vocabulary(owner.min_count, owner.max_size, value_type)  # frees its counts
            states[table] = TableState("vocabulary", key_types[table], vocabulary=vocabulary)
    return states
