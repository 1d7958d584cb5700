"""Taobao UserBehavior (Alibaba, Tianchi dataset 649): ``UserBehavior.csv``.

Comma-separated, no header: ``user_id, item_id, category_id, behavior_type, timestamp``
with ``behavior_type`` one of ``pv`` (page view), ``buy``, ``cart``, ``fav`` and unix-second
timestamps (a few fall outside the documented 2017-11-25..2017-12-03 window).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_embed.pipelines.readers.text import TextColumn, scan_delimited

BEHAVIORS = ("pv", "buy", "cart", "fav")
_COLUMNS = [
    TextColumn("user_id", pl.Int64, required=True),
    TextColumn("item_id", pl.Int64, required=True),
    TextColumn("item_category", pl.Int64, required=True),
    TextColumn("behavior", pl.Enum(BEHAVIORS), required=True),
    TextColumn("timestamp", pl.Int64, required=True),
]


def read_taobao(path: str | Path, validate: bool = True) -> pl.LazyFrame:
    """Scan Taobao UserBehavior lazily, in file order.

    Returns ``user_id``, ``item_id``, ``item_category`` (Int64; the file's ``category_id``),
    ``behavior`` (Enum of :data:`BEHAVIORS`) and ``timestamp`` (Datetime, from unix seconds).
    Filter the behaviours to use before :func:`behaviour_histories`, e.g.
    ``read_taobao(path).filter(pl.col("behavior") == "pv")``.

    Example::

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "UserBehavior.csv"
        >>> _ = path.write_text("1,2268318,2520377,pv,1511544070\\n")
        >>> read_taobao(path).collect().row(0)
        (1, 2268318, 2520377, 'pv', datetime.datetime(2017, 11, 24, 17, 21, 10))
    """
    return scan_delimited(path, _COLUMNS, ",", header=False, validate=validate).with_columns(
        pl.from_epoch("timestamp", time_unit="s")
    )
