"""Avazu click-through logs (Kaggle ``train`` / ``test``).

Comma-separated with a header, no quoting: ``id, click, hour, C1, banner_pos, site_*,
app_*, device_*, C14..C21`` (the test set has no ``click``). ``hour`` is ``YYMMDDHH``;
``id`` is an unsigned 64-bit number kept as a string (it overflows Int64).

Pre-encoded copies (as CTR benchmark repositories ship them) have a header ``label, feat_1,
feat_2, ...`` (any names after ``label``): the header tells the two apart (``label`` and no
``click``: pre-encoded).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.pipelines.readers.schemas import CategoricalIds, categorical_feature
from recsys_embed.pipelines.readers.text import TextColumn, first_line, header_columns, scan_delimited

_HOUR = TextColumn(
    "hour", pl.String, required=True,
    pattern=r"\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])([01]\d|2[0-3])", meaning="YYMMDDHH, e.g. '14102100'",
)
_STRING_CATEGORICALS = (
    "site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
    "device_id", "device_ip", "device_model",
)
_INTEGER_CATEGORICALS = ("C1", "banner_pos", "device_type", "device_conn_type", *(f"C{i}" for i in range(14, 22)))
CATEGORICAL_COLUMNS = ("C1", "banner_pos", *_STRING_CATEGORICALS, "device_type", "device_conn_type",
                       *(f"C{i}" for i in range(14, 22)))
TIME_FEATURES = ("hour_of_day", "weekday")

_KNOWN = {
    "id": TextColumn("id", pl.String, required=True, pattern=r"\d+", meaning="a decimal id"),
    "click": TextColumn("click", pl.Int8, required=True),
    "hour": _HOUR,
    **{name: TextColumn(name, pl.String) for name in _STRING_CATEGORICALS},
    **{name: TextColumn(name, pl.Int64) for name in _INTEGER_CATEGORICALS},
}


def read_avazu(path: str | Path, validate: bool = True) -> pl.LazyFrame:
    """Scan an Avazu CSV file lazily; columns are matched by the header, in any order.

    Returns ``label`` (Int8, from ``click``; absent in the test set), ``id`` (Utf8),
    ``timestamp`` (Datetime, the start of ``hour``), ``hour_of_day`` (Int8, 0-23),
    ``weekday`` (Int8, 1 = Monday .. 7 = Sunday), then the categorical columns: the
    ``site_*``/``app_*``/``device_id``/``device_ip``/``device_model`` hex strings as Utf8,
    ``C1, banner_pos, device_type, device_conn_type, C14..C21`` as Int64 (null when empty).
    A pre-encoded file (header ``label, feat_1, ...``) gives ``label`` (Int8, 0/1) and its
    other columns as Utf8, in file order (their schema: ``avazu_schema(columns=[...])``).

    Raises ``ValueError`` naming the file when the header lacks a column, and (with
    ``validate``) naming the line of a row with a wrong column count or a bad value.

    Example::

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.csv"
        >>> header = "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain," \\
        ...     "app_category,device_id,device_ip,device_model,device_type,device_conn_type," + \\
        ...     ",".join(f"C{i}" for i in range(14, 22))
        >>> row = "1000009418151094273,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9," \\
        ...     "07d7df22,a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79"
        >>> _ = path.write_text(header + "\\n" + row + "\\n")
        >>> read_avazu(path).select("label", "timestamp", "hour_of_day", "weekday", "site_id", "C14").collect().row(0)
        (0, datetime.datetime(2014, 10, 21, 0, 0), 0, 2, '1fbe01fe', 15706)
    """
    names = [name.strip() for name in first_line(path).split(",")]
    if names == [""]:
        raise ValueError(f"{path}: empty file; expected an Avazu CSV with a header line")
    if "label" in names and "click" not in names:
        return _read_encoded(path, names, validate)
    try:
        columns = header_columns(path, names, _KNOWN, ("click",), "Avazu")
    except ValueError as err:
        raise ValueError(f"{err}; or, pre-encoded, a header 'label,feat_1,feat_2,...'") from None
    frame = scan_delimited(path, columns, ",", header=True, validate=validate)
    timestamp = (pl.col("hour") + "00").str.strptime(pl.Datetime("us"), "%y%m%d%H%M")
    label = [pl.col("click").alias("label")] if "click" in names else []
    return frame.with_columns(timestamp.alias("timestamp")).select(
        *label,
        "id",
        "timestamp",
        pl.col("timestamp").dt.hour().cast(pl.Int8).alias("hour_of_day"),
        pl.col("timestamp").dt.weekday().cast(pl.Int8).alias("weekday"),
        *CATEGORICAL_COLUMNS,
    )


def _read_encoded(path: str | Path, names: list[str], validate: bool) -> pl.LazyFrame:
    """A pre-encoded file: ``label`` (Int8, 0/1) and the other columns as strings, in file order."""
    label = TextColumn("label", pl.Int8, required=True, pattern="[01]", meaning="0 or 1")
    known = {"label": label, **{name: TextColumn(name, pl.String) for name in names if name != "label"}}
    columns = header_columns(path, names, known, (), "pre-encoded Avazu")
    return scan_delimited(path, columns, ",", header=True, validate=validate).select(list(known))


def avazu_schema(
    categorical_ids: CategoricalIds = "vocabulary",
    min_count: int = 2,
    hash_buckets: int = 1 << 20,
    embedding_dim: int = 16,
    columns: Sequence[str] | None = None,
) -> Schema:
    """The default schema for :func:`read_avazu` frames: ``hour_of_day`` and ``weekday``
    (small fitted vocabularies) and every categorical column (a fitted vocabulary with
    ``min_count``, or ``hash_buckets`` stable hash buckets salted by the column name).
    For a pre-encoded file, ``columns`` names its categorical columns (``feat_1, ...``)."""
    if columns is None:
        features = [FeatureSpec(name, embedding_dim=embedding_dim) for name in TIME_FEATURES]
        columns = CATEGORICAL_COLUMNS
    else:
        features = []
    features += [categorical_feature(name, categorical_ids, min_count, hash_buckets, embedding_dim) for name in columns]
    return Schema(features=features, label="label")
