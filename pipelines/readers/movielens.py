"""MovieLens ratings: ML-1M ``ratings.dat`` and ML-100K ``u.data`` (and its ``u1.base`` ... splits).

ML-1M: ``UserID::MovieID::Rating::Timestamp``. ML-100K: ``user<TAB>item<TAB>rating<TAB>timestamp``.
Both have no header; ratings are whole stars 1-5, timestamps unix seconds.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.pipelines.readers.text import TextColumn, check_delimited

_COLUMNS = [
    TextColumn("user_id", pl.Int64, required=True),
    TextColumn("item_id", pl.Int64, required=True),
    TextColumn("rating", pl.Int8, required=True),
    TextColumn("timestamp", pl.Int64, required=True),
]
_SEPARATORS = {"ratings.dat": "::", "u.data": "\t"}


def movielens_separator(path: str | Path) -> str:
    """``"::"`` (ML-1M) or ``"\\t"`` (ML-100K), from the file name or else the first line."""
    name = Path(path).name
    if name in _SEPARATORS:
        return _SEPARATORS[name]
    first = pl.scan_lines(path).head(1).collect()
    line = first.item() if first.height else ""
    for separator in ("::", "\t"):
        if separator in line:
            return separator
    raise ValueError(
        f"{path}: not a MovieLens ratings file: expected ML-1M 'UserID::MovieID::Rating::Timestamp' "
        f"or ML-100K tab-separated 'user item rating timestamp' lines, got first line {line!r}"
    )


def read_movielens(path: str | Path, validate: bool = True) -> pl.LazyFrame:
    """Scan MovieLens ratings lazily: the raw interactions, in file order.

    Returns ``user_id`` (Int64), ``item_id`` (Int64), ``rating`` (Int8, 1-5) and
    ``timestamp`` (Datetime, from unix seconds). The format is told by the file name
    (``ratings.dat``, ``u.data``) or else by the first line.

    Example::

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ratings.dat"
        >>> _ = path.write_text("1::1193::5::978300760\\n1::661::3::978302109\\n")
        >>> read_movielens(path).collect().rows()[0]
        (1, 1193, 5, datetime.datetime(2000, 12, 31, 22, 12, 40))
    """
    separator = movielens_separator(path)
    if validate:
        check_delimited(path, _COLUMNS, separator)
    schema: dict[str, pl.DataType] = {}
    for i, column in enumerate(_COLUMNS):
        if i and separator == "::":
            schema[f"_gap{i}"] = pl.String  # polars splits on one byte: "::" is ':' + empty field + ':'
        schema[column.name] = column.dtype
    frame = pl.scan_csv(path, has_header=False, separator=separator[0], quote_char=None, schema=schema)
    return frame.select(
        "user_id", "item_id", "rating", pl.from_epoch("timestamp", time_unit="s").alias("timestamp")
    )


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
