"""Per-user item sequences and the leave-one-out split of BERT4Rec (Sun et al. 2019).

For each user the last item is the test target and the second last the validation target;
the model trains on the rest. Validation predicts item ``n-1`` from items ``1..n-2``, test
predicts item ``n`` from items ``1..n-1``.
"""

from __future__ import annotations

import polars as pl

from recsys_embed.features import FeatureSpec, Schema


def user_sequences(
    events: pl.LazyFrame,
    min_length: int = 5,
    *,
    user: str = "user_id",
    item: str = "item_id",
    timestamp: str = "timestamp",
) -> pl.DataFrame:
    """One row per user with at least ``min_length`` events: ``user_id`` and ``items`` (a list
    ordered by timestamp, ties in the order of the events: a stable sort, as other libraries
    split). Duplicate (user, item, timestamp) events count once (the first); repeated
    interactions at different times are kept. Rows are sorted by user.

    Example::

        >>> events = pl.LazyFrame({"user_id": [7, 7, 7, 8], "item_id": [3, 2, 1, 5],
        ...                        "timestamp": [20, 10, 10, 1]})
        >>> user_sequences(events, min_length=2).rows()
        [(7, [2, 1, 3])]
    """
    names = events.collect_schema().names()
    for arg, column in (("user", user), ("item", item), ("timestamp", timestamp)):
        if column not in names:
            raise ValueError(f"user_sequences: events have no column {column!r} (they have {names}); pass {arg}=<column>")
    if min_length < 1:
        raise ValueError(f"user_sequences: min_length must be >= 1, got {min_length}")
    order = "_event_order"
    return (
        events.select(user, item, timestamp)
        .with_row_index(order)
        .drop_nulls()
        .filter(pl.col(order) == pl.col(order).min().over(user, item, timestamp))  # the first of duplicates
        .group_by(user)
        .agg(pl.col(item).sort_by(timestamp, order).alias("items"))
        .filter(pl.col("items").list.len() >= min_length)
        .sort(user)
        .rename({user: "user_id"})
        .collect(engine="streaming")
    )


def leave_one_out(sequences: pl.DataFrame, items: str = "items") -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Split :func:`user_sequences` output into ``(train, valid, test)``, one row per user each.

    ``train`` has ``items`` without the last two; ``valid`` the same ``items`` and ``target``
    (the second last); ``test`` ``items`` without the last and ``target`` (the last). Every
    sequence needs at least 3 items (a ``ValueError`` names the first user that has fewer).

    Example::

        >>> train, valid, test = leave_one_out(pl.DataFrame({"user_id": [7], "items": [[1, 2, 3, 4]]}))
        >>> train.rows(), valid.rows(), test.rows()
        ([(7, [1, 2])], [(7, [1, 2], 3)], [(7, [1, 2, 3], 4)])
    """
    if items not in sequences.columns:
        raise ValueError(f"leave_one_out: no column {items!r} in {sequences.columns}")
    short = sequences.filter(pl.col(items).list.len() < 3)
    if short.height:
        raise ValueError(
            f"leave_one_out: row {short.row(0, named=True)} has fewer than 3 items; "
            "build sequences with user_sequences(min_length=3) or more"
        )
    seq = pl.col(items)
    others = [c for c in sequences.columns if c != items]
    train = sequences.select(*others, seq.list.slice(0, seq.list.len() - 2))
    valid = train.with_columns(sequences[items].list.get(-2).alias("target"))
    test = sequences.select(*others, seq.list.slice(0, seq.list.len() - 1), seq.list.get(-1).alias("target"))
    return train, valid, test


def sliding_windows(sequences: pl.DataFrame, length: int, items: str = "items") -> pl.DataFrame:
    """Every training sequence longer than ``length`` as several rows of at most ``length``
    items, so that a model that keeps ``length`` items a row still trains on all of them.

    Windows end at ``n, n - s, n - 2s, ...`` (``n`` items, stride ``s = length - 1``) until one
    starts at the first item: consecutive windows share one item, so every pair of neighbours
    ``(i, i + 1)`` (a next-item prediction) lies in one window. The most recent window comes
    first; other columns are repeated.

    Example::

        >>> frame = pl.DataFrame({"user_id": [7, 8], "items": [[1, 2, 3, 4, 5, 6], [9]]})
        >>> sliding_windows(frame, 3).rows()
        [(7, [4, 5, 6]), (7, [2, 3, 4]), (7, [1, 2]), (8, [9])]
    """
    if length < 2:
        raise ValueError(f"sliding_windows: length must be >= 2 (two neighbours a window), got {length}")
    stride = length - 1
    count, window, end = pl.col(items).list.len().cast(pl.Int64), "_window", pl.col("_end")
    return (
        sequences.with_columns(pl.int_ranges(0, ((count - length).clip(lower_bound=0) + stride - 1) // stride + 1).alias(window))
        .explode(window)
        .with_columns((count - pl.col(window) * stride).alias("_end"))
        .with_columns(pl.col(items).list.slice((end - length).clip(lower_bound=0), end - (end - length).clip(lower_bound=0)))
        .drop(window, "_end")
    )


def sequence_schema(max_len: int = 200, embedding_dim: int = 64, min_count: int = 1, items: str = "items") -> Schema:
    """The default schema for BERT4Rec frames: ``items`` as one sequence feature (its most
    recent ``max_len`` items, a fitted vocabulary with ``min_count``), no label, grouped by
    ``user_id``. Map ``target`` through the ``items`` table's vocabulary."""
    return Schema(
        features=[FeatureSpec(items, kind="sequence", max_len=max_len, min_count=min_count, embedding_dim=embedding_dim)],
        label=None,
        group="user_id",
    )
