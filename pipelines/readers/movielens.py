"""MovieLens ratings: ML-1M ``ratings.dat``, ML-100K ``u.data`` (and its ``u1.base`` ... splits)
and CSV files with named columns (ML-latest ``ratings.csv``, merged exports).

ML-1M: ``UserID::MovieID::Rating::Timestamp``. ML-100K: ``user<TAB>item<TAB>rating<TAB>timestamp``.
Both have no header; ratings are whole stars 1-5, timestamps unix seconds. A CSV (or TSV) with
a header names its columns (``userId,movieId,rating,timestamp``; other names through
``columns``); its ratings may be half stars, its other columns (``genres``, ``zip``) are kept
as strings. :data:`VARIANTS` lists the layouts tried.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import polars as pl

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.pipelines.readers.text import (
    TextColumn,
    Variant,
    check_delimited,
    pick_variant,
    scan_named,
    tell_variant,
)

_COLUMNS = [
    TextColumn("user_id", pl.Int64, required=True),
    TextColumn("item_id", pl.Int64, required=True),
    TextColumn("rating", pl.Int8, required=True),
    TextColumn("timestamp", pl.Int64, required=True),
]
_NAMED_COLUMNS = [*_COLUMNS[:2], TextColumn("rating", pl.Float32, required=True), _COLUMNS[3]]
VARIANTS = (Variant("::", header=False), Variant("\t", header=False), Variant(",", header=True), Variant("\t", header=True))
_BY_NAME = {"ratings.dat": VARIANTS[0], "u.data": VARIANTS[1]}
ALIASES = {  # file's column name -> ours
    "userId": "user_id", "UserID": "user_id", "movieId": "item_id", "movie_id": "item_id", "MovieID": "item_id",
    "Rating": "rating", "Timestamp": "timestamp",
}  # fmt: skip


def read_movielens(
    path: str | Path,
    validate: bool = True,
    separator: str | None = None,
    header: bool | None = None,
    columns: Mapping[str, str] | None = None,
) -> pl.LazyFrame:
    """Scan MovieLens ratings lazily: the raw interactions, in file order.

    Returns ``user_id`` (Int64), ``item_id`` (Int64), ``rating`` (Int8, 1-5; Float32 from a
    file with a header, which may hold half stars) and ``timestamp`` (Datetime, from unix
    seconds), then a headed file's other columns as strings. The variant is told by the file
    name (``ratings.dat``, ``u.data``), else by ``separator``/``header``, else by line 1.
    ``columns`` maps our names to a header's (``{"user_id": "uid"}``) beside :data:`ALIASES`.

    Example::

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ratings.dat"
        >>> _ = path.write_text("1::1193::5::978300760\\n1::661::3::978302109\\n")
        >>> read_movielens(path).collect().rows()[0]
        (1, 1193, 5, datetime.datetime(2000, 12, 31, 22, 12, 40))
        >>> csv = path.with_name("ratings.csv")
        >>> _ = csv.write_text("userId,movieId,rating,timestamp,genres\\n1,31,2.5,1260759144,Drama|Romance\\n")
        >>> read_movielens(csv).collect().row(0)
        (1, 31, 2.5, datetime.datetime(2009, 12, 14, 2, 52, 24), 'Drama|Romance')
    """
    names = [*ALIASES, *(c.name for c in _COLUMNS), *(columns or {}).values()]
    by_name = _BY_NAME.get(Path(path).name) if separator is None and header is None else None
    variant = by_name or pick_variant(path, VARIANTS, names, "read_movielens", separator, header)
    try:
        frame = _scan_named(path, variant, columns, validate) if variant.header else _scan_plain(path, variant, validate)
    except ValueError as err:
        raise tell_variant(err, variant, VARIANTS, "read_movielens") from None
    return frame.with_columns(pl.from_epoch("timestamp", time_unit="s"))


def _scan_plain(path: str | Path, variant: Variant, validate: bool) -> pl.LazyFrame:
    separator = variant.separator
    if validate:
        check_delimited(path, _COLUMNS, separator)
    schema: dict[str, pl.DataType] = {}
    for i, column in enumerate(_COLUMNS):
        if i and separator == "::":
            schema[f"_gap{i}"] = pl.String  # polars splits on one byte: "::" is ':' + empty field + ':'
        schema[column.name] = column.dtype
    frame = pl.scan_csv(path, has_header=False, separator=separator[0], quote_char=None, schema=schema)
    return frame.select(c.name for c in _COLUMNS)


def _scan_named(path: str | Path, variant: Variant, columns: Mapping[str, str] | None, validate: bool) -> pl.LazyFrame:
    rename = {**ALIASES, **{theirs: ours for ours, theirs in (columns or {}).items()}}
    frame = scan_named(path, _NAMED_COLUMNS, variant.separator, rename, validate=validate)
    ours = [c.name for c in _NAMED_COLUMNS]
    return frame.select(*ours, pl.exclude(ours))


def movielens_ctr(path: str | Path, validate: bool = True) -> pl.LazyFrame:
    """:func:`read_movielens` as a CTR task: ratings of 3 dropped, 1-2 -> ``label`` 0, 4-5 -> 1 (Int8)."""
    return (
        read_movielens(path, validate)
        .filter(pl.col("rating") != 3)
        .with_columns((pl.col("rating") >= 4).cast(pl.Int8).alias("label"))
    )


def movielens_schema(embedding_dim: int = 16) -> Schema:
    """The default schema for :func:`movielens_ctr` frames: ``user_id`` and ``item_id`` with
    fitted vocabularies, label ``label``, grouped by ``user_id`` (for GAUC)."""
    return Schema(
        features=[FeatureSpec("user_id", embedding_dim=embedding_dim), FeatureSpec("item_id", embedding_dim=embedding_dim)],
        label="label",
        group="user_id",
    )
