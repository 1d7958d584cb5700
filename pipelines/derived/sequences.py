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
    ordered by timestamp, ties by item id). Duplicate (user, item, timestamp) events count
    once; repeated interactions at different times are kept. Rows are sorted by user.

    Example::

        >>> events = pl.LazyFrame({"user_id": [7, 7, 7, 8], "item_id": [3, 1, 2, 5],
        ...                        "timestamp": [20, 10, 10, 1]})
        >>> user_sequences(events, min_length=2).rows()
        [(7, [1, 2, 3])]
    """
    names = events.collect_schema().names()
    for arg, column in (("user", user), ("item", item), ("timestamp", timestamp)):
        if column not in names:
            raise ValueError(f"user_sequences: events have no column {column!r} (they have {names}); pass {arg}=<column>")
    if min_length < 1:
        raise ValueError(f"user_sequences: min_length must be >= 1, got {min_length}")
    return (
        events.select(user, item, timestamp)
        .drop_nulls()
        .unique()
        .group_by(user)
        .agg(pl.col(item).sort_by(timestamp, item).alias("items"))
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


def sequence_schema(max_len: int = 200, embedding_dim: int = 64, min_count: int = 1, items: str = "items") -> Schema:
    """The default schema for BERT4Rec frames: ``items`` as one sequence feature (its most
    recent ``max_len`` items, a fitted vocabulary with ``min_count``), no label, grouped by
    ``user_id``. Map ``target`` through the ``items`` table's vocabulary."""
    return Schema(
        features=[FeatureSpec(items, kind="sequence", max_len=max_len, min_count=min_count, embedding_dim=embedding_dim)],
        label=None,
        group="user_id",
    )
