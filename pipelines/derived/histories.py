"""Behaviour histories for DIN-style models, shared by Amazon reviews and Taobao UserBehavior.

Every event of a user becomes an impression row: the target ``item`` (and its
``category``), the user's items (and categories) strictly earlier in time as history lists
(the ``max_len`` most recent, oldest first), label 1; plus ``negatives`` rows per impression
with the same user, time and history, an item drawn from the item popularity distribution
that the user never interacted with, and label 0 (see :mod:`.negatives`).

Events are deduplicated on (user, item, timestamp) and ordered by (timestamp, item) within
a user, so ties at one timestamp are ordered by item id but never see each other in their
histories. Rows with a null user, item or timestamp are dropped.

Memory: events are split by user into ``partitions`` Parquet files in one streaming pass,
then each partition's events are held in memory (a few tens of bytes per event) while its
rows are built with vectorised numpy index arithmetic and written in row groups of about
260k rows; pick ``partitions`` so that one partition's events fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.files import remove
from recsys_embed.pipelines.derived.negatives import PopularitySampler, user_position_keys
from recsys_embed.pipelines.derived.output import atomic_directory

HISTORY_PREFIX = "hist_"
_SORTED = "sorted.parquet.staged"
_ROWS_PER_CHUNK = 1 << 18


def behaviour_histories(
    events: pl.LazyFrame,
    out_dir: str | Path,
    max_len: int = 50,
    negatives: int = 1,
    seed: int = 0,
    *,
    user: str = "user_id",
    item: str = "item_id",
    category: str | None = "item_category",
    timestamp: str = "timestamp",
    min_history: int = 1,
    partitions: int = 1,
    overwrite: bool = False,
) -> pl.LazyFrame:
    """Write impression rows with histories and sampled negatives to ``out_dir/part-*.parquet``.

    Output columns: ``user``, ``item``, ``category`` (the target's; a sampled item gets its
    most frequent category), ``timestamp``, ``hist_<item>``, ``hist_<category>`` (lists,
    oldest first, at most ``max_len``), ``label`` (Int8). Impressions whose history has
    fewer than ``min_history`` items are skipped. Within a part file rows are ordered by user,
    time, item, each positive followed by its negatives. The output is the same for any ``partitions``
    and is a deterministic function of ``seed``. Writing is atomic (temporary folder, then
    rename); returns a lazy scan of the result.

    Example::

        >>> import tempfile, pathlib, datetime
        >>> events = pl.LazyFrame({"user_id": [1, 1, 1, 2, 2], "item_id": [10, 11, 12, 10, 13],
        ...                        "timestamp": [1, 2, 3, 1, 2]})
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "histories"
        >>> rows = behaviour_histories(events, out, category=None, negatives=1).collect()
        >>> rows.filter(pl.col("label") == 1).select("user_id", "item_id", "hist_item_id").rows()
        [(1, 11, [10]), (1, 12, [10, 11]), (2, 13, [10])]
        >>> rows.filter(pl.col("label") == 0)["item_id"].to_list()  # items the user never saw
        [13, 13, 12]
    """
    names = events.collect_schema().names()
    for arg, column in (("user", user), ("item", item), ("timestamp", timestamp), ("category", category)):
        if column is not None and column not in names:
            hint = " or category=None" if arg == "category" else ""
            raise ValueError(
                f"behaviour_histories: events have no column {column!r} (they have {names}); pass {arg}=<column>{hint}"
            )
    for arg, value, low in (("max_len", max_len, 1), ("negatives", negatives, 0), ("min_history", min_history, 0),
                            ("partitions", partitions, 1)):
        if value < low:
            raise ValueError(f"behaviour_histories: {arg} must be >= {low}, got {value}")
    sequence = [item] if category is None else [item, category]
    with atomic_directory(out_dir, overwrite) as tmp:
        staging = tmp / "_staging"
        events.select(user, *sequence, timestamp).drop_nulls([user, item, timestamp]).with_columns(
            (pl.col(user).hash(seed=0) % partitions).alias("_part")
        ).sink_parquet(pl.PartitionBy(staging, key="_part", include_key=False), mkdir=True)
        parts = sorted(p for p in staging.iterdir() if p.is_dir()) if staging.exists() else []
        if not parts:
            raise ValueError("behaviour_histories: no events with a user, item and timestamp")
        counts = []
        for part in parts:
            frame = pl.read_parquet(part).sort([user, timestamp, *sequence], nulls_last=True)
            frame = frame.unique([user, item, timestamp], keep="first", maintain_order=True)
            frame.write_parquet(part / _SORTED)
            counts.append(frame.group_by(sequence).len())
        items = _item_table(pl.concat(counts), item, category)
        sampler = PopularitySampler(items["count"].to_numpy()) if negatives else None
        for number, part in enumerate(parts):
            frame = pl.read_parquet(part / _SORTED)
            plan = _Impressions.of(frame, user, timestamp, max_len, min_history)
            drawn = np.zeros((len(plan.events), 0), dtype=np.int64)
            if sampler is not None:
                drawn = _draw_negatives(frame, plan, items, sampler, negatives, seed, user, item)
            _write_rows(tmp / f"part-{number:05d}.parquet", frame, items, plan, drawn, user, sequence, timestamp)
        remove(staging)
    return pl.scan_parquet(Path(out_dir) / "part-*.parquet")


def _item_table(counts: pl.DataFrame, item: str, category: str | None) -> pl.DataFrame:
    """One row per item sorted by item: ``count`` of its events and its most frequent category."""
    sequence = [item] if category is None else [item, category]
    merged = counts.group_by(sequence).agg(pl.col("len").sum())
    if category is None:
        return merged.rename({"len": "count"}).sort(item)
    ranked = merged.sort([item, "len", category], descending=[False, True, False], nulls_last=True)
    return ranked.group_by(item, maintain_order=True).agg(
        pl.col("len").sum().alias("count"), pl.col(category).first()
    ).sort(item)


@dataclass
class _Impressions:
    """The impressions of one partition (events sorted by user, then time), as event indices.

    ``events [N]``: the target event of each impression; its history is the events
    ``start .. start + length - 1``; ``positions [N]``: index within the user's sequence;
    ``user_codes [M]``: dense user code of every event.
    """

    events: np.ndarray
    start: np.ndarray
    length: np.ndarray
    positions: np.ndarray
    user_codes: np.ndarray

    @classmethod
    def of(cls, frame: pl.DataFrame, user: str, timestamp: str, max_len: int, min_history: int) -> _Impressions:
        new_user = frame[user].ne_missing(frame[user].shift()).to_numpy()
        new_time = new_user | frame[timestamp].ne_missing(frame[timestamp].shift()).to_numpy()
        user_codes = np.cumsum(new_user) - 1
        first_of_user = np.flatnonzero(new_user)[user_codes]
        end = np.flatnonzero(new_time)[np.cumsum(new_time) - 1]  # first event at this time: history ends before it
        start = np.maximum(first_of_user, end - max_len)
        keep = np.flatnonzero(end - start >= min_history)
        return cls(keep, start[keep], (end - start)[keep], keep - first_of_user[keep], user_codes)


def _draw_negatives(
    frame: pl.DataFrame, plan: _Impressions, items: pl.DataFrame, sampler: PopularitySampler,
    negatives: int, seed: int, user: str, item: str,
) -> np.ndarray:
    """Item-table codes ``[N, negatives]`` of the sampled items of each impression."""
    codes = items.select(item).with_row_index("_code").with_columns(pl.col("_code").cast(pl.Int64))
    item_codes = frame.select(item).join(codes, on=item, how="left", maintain_order="left")["_code"].to_numpy()
    seen = np.sort(plan.user_codes * sampler.n_items + item_codes)
    users = frame[user].gather(np.flatnonzero(np.diff(plan.user_codes, prepend=-1)))
    keys = user_position_keys(frame[user].gather(plan.events), plan.positions, seed)
    return sampler.sample(keys, plan.user_codes[plan.events], seen, negatives, users)


def _write_rows(
    path: Path, frame: pl.DataFrame, items: pl.DataFrame, plan: _Impressions, drawn: np.ndarray,
    user: str, sequence: list[str], timestamp: str,
) -> None:
    """Write each impression followed by its negatives, ``_ROWS_PER_CHUNK`` rows per row group."""
    per_impression = 1 + drawn.shape[1]
    targets = {c: pl.concat([frame[c], items[c]]) for c in sequence}  # event values, then item-table values
    step = max(1, _ROWS_PER_CHUNK // per_impression)
    writer = None
    try:
        for lo in range(0, max(len(plan.events), 1), step):
            chunk = slice(lo, lo + step)
            impressions = np.repeat(np.arange(len(plan.events))[chunk], per_impression)
            events = plan.events[impressions]
            sampled = np.concatenate([np.full((len(events) // per_impression, 1), -1), drawn[chunk]], axis=1).ravel()
            target = np.where(sampled < 0, events, len(frame) + sampled)
            lengths = plan.length[impressions]
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            history = np.repeat(plan.start[impressions] - offsets[:-1], lengths) + np.arange(offsets[-1])
            columns = {user: frame[user].gather(events).to_arrow()}
            columns |= {c: targets[c].gather(target).to_arrow() for c in sequence}
            columns[timestamp] = frame[timestamp].gather(events).to_arrow()
            for c in sequence:
                values = frame[c].gather(history).to_arrow()
                columns[f"{HISTORY_PREFIX}{c}"] = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values)
            columns["label"] = pa.array((sampled < 0).astype(np.int8))
            table = pa.table(columns)
            writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def history_schema(
    max_len: int = 50,
    with_category: bool = True,
    embedding_dim: int = 16,
    min_count: int = 1,
    item: str = "item_id",
    category: str = "item_category",
) -> Schema:
    """The default schema for :func:`behaviour_histories` output (Amazon, Taobao): ``user_id``,
    the target ``item`` and ``category``, and their ``hist_*`` sequences sharing the target's
    table; fitted vocabularies with ``min_count``; label ``label``, grouped by ``user_id``."""
    targets = [item, category] if with_category else [item]
    features = [FeatureSpec("user_id", min_count=min_count, embedding_dim=embedding_dim)]
    features += [FeatureSpec(name, min_count=min_count, embedding_dim=embedding_dim) for name in targets]
    features += [
        FeatureSpec(f"{HISTORY_PREFIX}{name}", kind="sequence", table=name, max_len=max_len,
                    min_count=min_count, embedding_dim=embedding_dim)
        for name in targets
    ]
    return Schema(features=features, label="label", group="user_id")
