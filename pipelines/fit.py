"""Fitting: one streaming pass over the data that learns vocabularies and numeric stats.

Memory is bounded by the distinct values of the vocabulary groups (plus one record batch and
a fixed-size sample per bucketized feature), never by the number of rows:

* vocabularies: exact counts, merged batch by batch. Parquet string columns arrive
  dictionary-encoded, so a batch is counted with ``np.bincount`` over its dictionary
  indices; other columns with Arrow's ``value_counts``. Values with an order-preserving
  64-bit key (int64 ids, strings of at most 8 bytes) are counted by key and merged by a
  numpy sort, longer strings by a polars group-by; pending counts are merged whenever they
  outgrow the merged counts (amortised linear). Then values seen at least ``min_count``
  times are kept, the ``max_size`` most frequent, ids ``2..`` by descending count, ties
  broken by ascending value (byte order), each table group in a thread (a value sort, then
  a stable radix sort on count ranks).
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
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from recsys_embed.errors import VocabularyCoverageWarning
from recsys_embed.features import DTYPES, FeatureKind, FeatureSpec, IdStrategy, NumericTransform, Schema
from recsys_embed.hashing import hash_int_np, seed_of
from recsys_embed.pipelines.columns import (
    Where,
    byte_word,
    check_type,
    key_type_of,
    keys,
    numeric_values,
    sequence_keys,
    string_bytes,
)
from recsys_embed.pipelines.prefetch import prefetch
from recsys_embed.pipelines.sources import ReadSpec, Shard, read_shard
from recsys_embed.pipelines.state import FittedState, NumericState, TableState

SAMPLE_SIZE = 100_000
MERGE_ROWS = 1 << 18
MIN_COVERAGE = 0.5


class VocabularyCounter:
    """Exact counts of the values of one table group, accumulated batch by batch.

    Each batch is first reduced to (value, count) pairs: ``np.bincount`` over the indices of
    a dictionary-encoded batch (Parquet string columns), Arrow's ``value_counts`` otherwise.
    While every value has an order-preserving uint64 key (:func:`value_keys`: int64 ids, and
    strings of at most 8 bytes such as Criteo's hex ids), the pairs are kept as keys and
    merged by a numpy sort (:class:`KeyCounts`); the first string without a key turns the
    counter to strings merged by a polars group-by (:class:`StringCounts`). Pending pairs
    are merged whenever they outnumber both the merged values and ``merge_rows``: amortised
    linear work, memory about twice the distinct values.
    """

    def __init__(self, merge_rows: int = MERGE_ROWS) -> None:
        self._counts: KeyCounts | StringCounts = KeyCounts(merge_rows)
        self.covered = 0  # after vocabulary(): how many counted values it keeps (with repeats)

    def add(self, keys: pa.Array) -> None:
        """Count the non-null values of ``keys`` (int64 or string, maybe dictionary-encoded)."""
        values, counts = _batch_counts(keys)
        if isinstance(self._counts, KeyCounts):
            value_key = value_keys(values)
            if value_key is not None:
                if not counts.all():  # unused or null dictionary entries
                    value_key, counts = value_key[counts > 0], counts[counts > 0]
                self._counts.add(value_key, counts)
                return
            self._counts = self._counts.as_strings()
        self._counts.add(values, counts)

    def vocabulary(self, min_count: int, max_size: int | None, value_type: pa.DataType) -> pa.Array:
        """The values counted at least ``min_count`` times, the ``max_size`` most frequent, by
        descending count, ties by ascending value (byte order for strings), as ``value_type``.
        Spends the counter: its counts are freed, :attr:`covered` stays."""
        vocabulary, self.covered = self._counts.vocabulary(min_count, max_size, value_type)
        self._counts = KeyCounts(self._counts.merge_rows)
        return vocabulary


def _batch_counts(keys: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """``(values, counts)`` of one batch: the distinct non-null values, or the dictionary of
    a dictionary-encoded batch, whose unused entries and null entries count 0."""
    if not pa.types.is_dictionary(keys.type):
        table = pc.value_counts(keys.drop_null())
        return table.field("values"), table.field("counts").to_numpy()
    counts = np.bincount(pc.fill_null(keys.indices, 0).to_numpy(), minlength=len(keys.dictionary))
    if keys.null_count:
        counts[0] -= keys.null_count  # null slots were counted as index 0
    if keys.dictionary.null_count:
        counts[~keys.dictionary.is_valid().to_numpy(zero_copy_only=False)] = 0
    return keys.dictionary, counts[: len(keys.dictionary)]


_SIGN = np.uint64(1 << 63)
_VIEW = np.dtype([("length", "<i4"), ("bytes", ">u8"), ("padding", "<u4")])  # an Arrow string view, inline


def value_keys(values: pa.Array) -> np.ndarray | None:
    """uint64 keys of distinct values (int64 without nulls, or strings) that compare as the
    values do: an integer with its sign bit flipped; the bytes of a string of at most 8 bytes
    that does not end in a NUL byte, big-endian, zero padded. None when a string has no key.

        >>> value_keys(pa.array(["b", "ab", "a"])).argsort().tolist(), value_keys(pa.array(["123456789"]))
        ([2, 1, 0], None)
    """
    if pa.types.is_integer(values.type):
        return values.to_numpy().view(np.uint64) ^ _SIGN
    data, starts, lengths = string_bytes(values)
    width = int(lengths.max(initial=0))
    if width > 8 or not data[(starts + lengths - 1)[lengths > 0]].all():
        return None
    if width and lengths.min() == width:  # one length (e.g. fixed-width ids): a byte matrix, 3x faster
        padded = np.zeros((len(lengths), 8), np.uint8)
        padded[:, :width] = data[starts[0] : starts[0] + width * len(lengths)].reshape(-1, width)
        return padded.view(">u8")[:, 0].astype(np.uint64)
    return byte_word(data, starts, lengths, 0).byteswap()


def key_values(keys: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """The values of :func:`value_keys` ``keys``, as ``value_type`` (int64 or large_string).
    Strings are built as inline string views (4-byte length, then the bytes, zero padded)."""
    if pa.types.is_integer(value_type):
        return pa.array((keys ^ _SIGN).view(np.int64))
    _, exponent = np.frexp((keys & (~keys + np.uint64(1))).astype(np.float64))  # lowest set bit: 2 ** (exponent - 1)
    views = np.zeros(len(keys), _VIEW)
    views["length"] = np.where(keys == 0, 0, 8 - (exponent - 1) // 8)  # 8 minus the zero padding
    views["bytes"] = keys
    return pa.Array.from_buffers(pa.string_view(), len(keys), [None, pa.py_buffer(views)]).cast(value_type)


class _Counts(ABC):
    """(value, count) pairs of one table group: merged ones, and batches of pending ones that
    are merged whenever they outnumber both the merged values and ``merge_rows``."""

    def __init__(self, merge_rows: int) -> None:
        self.merge_rows = merge_rows
        self._pending: list[tuple[Any, np.ndarray]] = []
        self._pending_rows = 0
        self._merged_rows = 0

    def add(self, values: Any, counts: np.ndarray) -> None:
        self._pending.append((values, counts))
        self._pending_rows += len(counts)
        if self._pending_rows > max(self.merge_rows, self._merged_rows):
            self._merged_rows = self._merge(self._take_pending())

    def _take_pending(self) -> list[tuple[Any, np.ndarray]]:
        pending, self._pending, self._pending_rows = self._pending, [], 0
        return pending

    @abstractmethod
    def _merge(self, pending: list[tuple[Any, np.ndarray]]) -> int:
        """Fold ``pending`` into the merged pairs; the number of merged pairs."""

    @abstractmethod
    def vocabulary(self, min_count: int, max_size: int | None, value_type: pa.DataType) -> tuple[pa.Array, int]:
        """The vocabulary (see :meth:`VocabularyCounter.vocabulary`) and how many counted values it keeps."""


class KeyCounts(_Counts):
    """Counts by :func:`value_keys` key: ``keys`` distinct and ascending (so in value order),
    ``counts`` beside them; pending pairs are merged by a numpy sort."""

    def __init__(self, merge_rows: int) -> None:
        super().__init__(merge_rows)
        self.keys = np.zeros(0, np.uint64)
        self.counts = np.zeros(0, np.int64)

    def _merge(self, pending: list[tuple[Any, np.ndarray]]) -> int:
        if pending:
            keys, counts = _by_key([k for k, _ in pending], [c for _, c in pending])
            if len(self.keys):  # two sorted runs: numpy's stable sort merges them in linear time
                keys, counts = _by_key([self.keys, keys], [self.counts, counts], "stable")
            starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
            self.keys, self.counts = keys[starts], np.add.reduceat(counts, starts)
        return len(self.keys)

    def as_strings(self) -> StringCounts:
        """The counts so far as :class:`StringCounts` (the keys of a string table group)."""
        self._merge(self._take_pending())
        strings = StringCounts(self.merge_rows)
        strings.add(key_values(self.keys, pa.large_string()), self.counts)
        return strings

    def vocabulary(self, min_count: int, max_size: int | None, value_type: pa.DataType) -> tuple[pa.Array, int]:
        self._merge(self._take_pending())
        kept = self.counts >= min_count
        keys, counts = self.keys[kept], self.counts[kept]
        chosen = descending_count(counts)[:max_size]
        return key_values(keys[chosen], value_type), int(counts[chosen].sum())


def _by_key(keys: list[np.ndarray], counts: list[np.ndarray], kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The concatenated ``keys`` sorted, and ``counts`` alongside."""
    key = np.concatenate(keys)
    order = np.argsort(key, kind=kind)
    return key[order], np.concatenate(counts)[order]


class StringCounts(_Counts):
    """Counts by exact value (any strings), merged by a polars group-by (columns ``v``, ``c``),
    then ordered by :func:`count_order`."""

    def __init__(self, merge_rows: int) -> None:
        super().__init__(merge_rows)
        self._merged: pl.DataFrame | None = None

    def _merge(self, pending: list[tuple[Any, np.ndarray]]) -> int:
        self._merged = self._grouped(pending).collect()
        return self._merged.height

    def _grouped(self, pending: list[tuple[Any, np.ndarray]]) -> pl.LazyFrame:
        frames = [] if self._merged is None else [self._merged.lazy()]
        if pending:
            values = [v for v, _ in pending]
            if len({v.type for v in values}) > 1:  # e.g. string and large_string
                values = [v.cast(pa.large_string()) for v in values]
            pairs = pa.table({"v": pa.chunked_array(values), "c": np.concatenate([c for _, c in pending])})
            frames.append(pl.from_arrow(pairs).lazy().filter(pl.col("v").is_not_null() & (pl.col("c") > 0)))
        if not frames:
            return pl.LazyFrame(schema={"v": pl.String, "c": pl.Int64})
        return pl.concat(frames).group_by("v").agg(pl.col("c").sum())

    def vocabulary(self, min_count: int, max_size: int | None, value_type: pa.DataType) -> tuple[pa.Array, int]:
        frame = self._grouped(self._take_pending()).filter(pl.col("c") >= min_count).collect()
        values, counts = frame["v"].to_arrow().cast(value_type), frame["c"].to_numpy()
        chosen = count_order(values, counts)[:max_size]
        return values.take(chosen), int(counts[chosen].sum())


def vocabularies(
    counters: dict[str, VocabularyCounter], specs: dict[str, FeatureSpec], value_types: dict[str, pa.DataType]
) -> dict[str, pa.Array]:
    """The vocabulary of each counted table group (``specs`` gives its ``min_count`` and
    ``max_size``), built in threads (numpy, Arrow and polars release the GIL); each counter is
    spent and holds its :attr:`VocabularyCounter.covered`."""
    tables = list(counters)
    jobs = [(counters[t], specs[t], value_types[t]) for t in tables]

    def vocabulary(job: tuple[VocabularyCounter, FeatureSpec, pa.DataType]) -> pa.Array:
        counter, spec, value_type = job
        return counter.vocabulary(spec.min_count, spec.max_size, value_type)

    with ThreadPoolExecutor(max_workers=max(1, min(len(tables), os.cpu_count() or 1))) as pool:
        return dict(zip(tables, pool.map(vocabulary, jobs)))


def count_order(values: pa.Array, counts: np.ndarray) -> np.ndarray:
    """Positions of distinct ``values`` by descending count, ties by ascending value (byte
    order for strings): the values are sorted once, then stably by count (:func:`descending_count`).

        >>> count_order(pa.array(["b", "abcdefghij", "abcdefghi", "a", "c"]), np.array([1, 2, 2, 2, 5])).tolist()
        [4, 3, 2, 1, 0]
    """
    order = _value_order(values)
    return order[descending_count(counts[order])]


def descending_count(counts: np.ndarray) -> np.ndarray:
    """A stable sort of ``counts``, highest first: a stable sort of their ranks, a 16-bit key
    that numpy radix-sorts when there are at most 65,536 distinct counts."""
    distinct, ranks = np.unique(-counts, return_inverse=True)  # rank 0: the highest count
    return np.argsort(ranks.astype(np.uint16 if len(distinct) <= 1 << 16 else np.int64), kind="stable")


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


def fit_state(
    schema: Schema, shards: list[Shard], batch_rows: int = 262_144, progress: bool = False, min_coverage: float = MIN_COVERAGE
) -> FittedState:
    """Learn the :class:`FittedState` of ``schema`` in one pass over ``shards``.

    Warns (:class:`VocabularyCoverageWarning`) for each table group whose vocabulary keeps less
    than ``min_coverage`` of the values seen (counted with repeats; the rest would be OOV), as
    ``min_count=10`` on a sample of a hundred rows does. The default, :data:`MIN_COVERAGE` (half),
    is far below what a vocabulary fitted on enough data covers (Criteo, ``min_count=10``: 0.9+)."""
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
                if feature.dtype is not None:
                    key_types[table] = DTYPES[feature.dtype]  # type: ignore[index]
                elif table not in key_types and key_type_of(column.type) is not None:
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
    tables = _table_states(schema, key_types, counters)
    for table, counter in counters.items():
        seen = sum(present[f.name] for f in schema.tables[table])
        if counter.covered < min_coverage * seen:
            owner = schema.tables[table][0]
            warnings.warn(VocabularyCoverageWarning(
                f"table group {table!r}: its vocabulary ({tables[table].size} values seen >= min_count={owner.min_count} times"
                f"{'' if owner.max_size is None else f', at most max_size={owner.max_size}'}) keeps {counter.covered / seen:.1%} "
                f"of the {seen} values fitted on (below {min_coverage:.0%}); the others map to the OOV id: "
                "lower min_count or fit on more rows"
            ), stacklevel=3)  # fmt: skip
    return FittedState(
        schema_fingerprint=schema.fingerprint(),
        tables=tables,
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
