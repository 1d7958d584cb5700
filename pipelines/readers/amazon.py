"""Amazon product reviews (McAuley et al., the 2014 and 2018 "5-core" JSON lines files).

Reviews: one JSON object per line with ``reviewerID``, ``asin``, ``overall`` (1.0-5.0) and
``unixReviewTime`` (other keys ignored). Metadata: one object per line with ``asin`` and
either ``category`` (2018: a list, most specific last) or ``categories`` (2014: a list of
lists). The 2014 metadata files are Python literals rather than JSON; convert them to JSON
first (``json.dumps(ast.literal_eval(line))``); this reader never evaluates text.
Files may be gzip-compressed (polars decompresses them whole, in memory).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_embed.pipelines.readers.text import TextColumn, check_json_lines

_REVIEW_FIELDS = [
    TextColumn("reviewerID", pl.String, required=True),
    TextColumn("asin", pl.String, required=True),
    TextColumn("overall", pl.Float64, required=True),
    TextColumn("unixReviewTime", pl.Int64, required=True),
]
_METADATA_FIELDS = [TextColumn("asin", pl.String, required=True)]


def read_amazon_reviews(path: str | Path, validate: bool = True) -> pl.LazyFrame:
    """Scan an Amazon reviews JSON lines file lazily.

    Returns ``user_id`` (Utf8, reviewerID), ``item_id`` (Utf8, asin), ``rating`` (Float32)
    and ``timestamp`` (Datetime, from unixReviewTime), in file order.

    Example::

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "reviews_Electronics_5.json"
        >>> _ = path.write_text('{"reviewerID": "AO94DHGC771SJ", "asin": "0528881469", "overall": 5.0, '
        ...                     '"reviewText": "works", "unixReviewTime": 1370131200}\\n')
        >>> read_amazon_reviews(path).collect().row(0)
        ('AO94DHGC771SJ', '0528881469', 5.0, datetime.datetime(2013, 6, 2, 0, 0))
    """
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
    categories = read_amazon_metadata(metadata, validate).unique("item_id", keep="first", maintain_order=True)
    return events.join(categories, on="item_id", how="left", maintain_order="left")
