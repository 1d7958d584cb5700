"""Amazon product reviews (McAuley et al., the 2014 and 2018 "5-core" JSON lines files).

Reviews: one JSON object per line with ``reviewerID``, ``asin``, ``overall`` (1.0-5.0) and
``unixReviewTime`` (other keys ignored). Metadata: one object per line with ``asin`` and
either ``category`` (2018: a list, most specific last) or ``categories`` (2014: a list of
lists). The 2014 metadata files are Python literals rather than JSON; convert them to JSON
first (``json.dumps(ast.literal_eval(line))``); this reader never evaluates text.
Files may be gzip-compressed (polars decompresses them whole, in memory).

Reviews may also come as a CSV with a header, as DIN's preprocessing of Amazon Electronics
writes them: ``user_id,item_id,time,cate_id`` (``time`` in unix seconds; no rating).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import polars as pl

from recsys_embed.pipelines.readers.text import TextColumn, check_json_lines, first_line, scan_named

_REVIEW_FIELDS = [
    TextColumn("reviewerID", pl.String, required=True),
    TextColumn("asin", pl.String, required=True),
    TextColumn("overall", pl.Float64, required=True),
    TextColumn("unixReviewTime", pl.Int64, required=True),
]
_METADATA_FIELDS = [TextColumn("asin", pl.String, required=True)]
_CSV_COLUMNS = [
    TextColumn("user_id", pl.String, required=True),
    TextColumn("item_id", pl.String, required=True),
    TextColumn("rating", pl.Float32),
    TextColumn("timestamp", pl.Int64, required=True),
    TextColumn("item_category", pl.String),
]
CSV_ALIASES = {  # a CSV header's name -> ours
    "time": "timestamp", "cate_id": "item_category", "reviewerID": "user_id", "asin": "item_id",
    "overall": "rating", "unixReviewTime": "timestamp",
}  # fmt: skip


def read_amazon_reviews(
    path: str | Path, validate: bool = True, separator: str = ",", columns: Mapping[str, str] | None = None
) -> pl.LazyFrame:
    """Scan Amazon reviews lazily: JSON lines, or (when line 1 is not a JSON object) a CSV
    with a header whose columns are named ours, or as in :data:`CSV_ALIASES`, or by ``columns``
    (our name -> the file's name); ``separator`` is the CSV's.

    Returns ``user_id`` (Utf8, reviewerID), ``item_id`` (Utf8, asin), ``rating`` (Float32;
    null from a CSV without one) and ``timestamp`` (Datetime, from unixReviewTime or ``time``),
    plus ``item_category`` (Utf8) from a CSV that has ``cate_id``, in file order.

    Example::

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "reviews_Electronics_5.json"
        >>> _ = path.write_text('{"reviewerID": "AO94DHGC771SJ", "asin": "0528881469", "overall": 5.0, '
        ...                     '"reviewText": "works", "unixReviewTime": 1370131200}\\n')
        >>> read_amazon_reviews(path).collect().row(0)
        ('AO94DHGC771SJ', '0528881469', 5.0, datetime.datetime(2013, 6, 2, 0, 0))
        >>> csv = path.with_name("electronics.csv")
        >>> _ = csv.write_text("user_id,item_id,time,cate_id\\n0,13179,1400457600,Cables\\n")
        >>> read_amazon_reviews(csv).collect().row(0)
        ('0', '13179', None, datetime.datetime(2014, 5, 19, 0, 0), 'Cables')
    """
    if not first_line(path).lstrip().startswith("{"):
        rename = {**CSV_ALIASES, **{theirs: ours for ours, theirs in (columns or {}).items()}}
        frame = scan_named(path, _CSV_COLUMNS, separator, rename, validate=validate)
        names = frame.collect_schema().names()
        return frame.select(
            "user_id", "item_id", pl.col("rating") if "rating" in names else pl.lit(None, pl.Float32).alias("rating"),
            pl.from_epoch("timestamp", time_unit="s"), *(["item_category"] if "item_category" in names else []),
        )
    if validate:
        check_json_lines(path, _REVIEW_FIELDS)
    return pl.scan_ndjson(path, schema={c.name: c.dtype for c in _REVIEW_FIELDS}).select(
        pl.col("reviewerID").alias("user_id"),
        pl.col("asin").alias("item_id"),
        pl.col("overall").cast(pl.Float32).alias("rating"),
        pl.from_epoch("unixReviewTime", time_unit="s").alias("timestamp"),
    )


def read_amazon_metadata(path: str | Path, validate: bool = True) -> pl.LazyFrame:
    """Scan an Amazon metadata JSON lines file lazily: ``item_id`` (Utf8) and ``item_category``
    (Utf8, the most specific category: the last of ``category``, else the last of the last
    list of ``categories``, as in the DIN paper's preprocessing; null when neither is there).
    """
    if validate:
        check_json_lines(path, _METADATA_FIELDS)
    schema = {"asin": pl.String, "category": pl.List(pl.String), "categories": pl.List(pl.List(pl.String))}
    return pl.scan_ndjson(path, schema=schema).select(
        pl.col("asin").alias("item_id"),
        pl.coalesce(pl.col("category").list.last(), pl.col("categories").list.last().list.last()).alias("item_category"),
    )


def amazon_events(reviews: str | Path, metadata: str | Path | None = None, validate: bool = True) -> pl.LazyFrame:
    """Reviews as behaviour events for :func:`behaviour_histories`: ``user_id, item_id,
    rating, timestamp`` plus ``item_category`` when ``metadata`` is given (null for items
    the metadata lacks; an item listed twice keeps its first line).

    Example::

        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "reviews.json").write_text(
        ...     '{"reviewerID": "U1", "asin": "B1", "overall": 4.0, "unixReviewTime": 1}\\n')
        >>> _ = (folder / "meta.json").write_text('{"asin": "B1", "category": ["Electronics", "Cables"]}\\n')
        >>> amazon_events(folder / "reviews.json", folder / "meta.json").collect().row(0, named=True)["item_category"]
        'Cables'
    """
    events = read_amazon_reviews(reviews, validate)
    if metadata is None:
        return events
    if "item_category" in events.collect_schema().names():
        raise ValueError(f"{reviews}: already has item categories (cate_id); pass metadata=None")
    categories = read_amazon_metadata(metadata, validate).unique("item_id", keep="first", maintain_order=True)
    return events.join(categories, on="item_id", how="left", maintain_order="left")
