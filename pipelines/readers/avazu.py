"""Avazu click-through logs (Kaggle ``train`` / ``test``).

Comma-separated with a header, no quoting: ``id, click, hour, C1, banner_pos, site_*,
app_*, device_*, C14..C21`` (the test set has no ``click``). ``hour`` is ``YYMMDDHH``;
``id`` is an unsigned 64-bit number kept as a string (it overflows Int64).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.pipelines.readers.schemas import CategoricalIds, categorical_feature
from recsys_embed.pipelines.readers.text import TextColumn, scan_delimited

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
    names = _header(path)
    missing = [name for name in _KNOWN if name != "click" and name not in names]
    unknown = [name for name in names if name not in _KNOWN]
    if missing or unknown or len(set(names)) != len(names):
        raise ValueError(
            f"{path}: the header (line 1) does not name the Avazu columns: missing {missing}, "
            f"unknown {unknown}, duplicated {sorted({n for n in names if names.count(n) > 1})}; "
            f"expected {list(_KNOWN)} (without 'click' in the test set)"
        )
    frame = scan_delimited(path, [_KNOWN[name] for name in names], ",", header=True, validate=validate)
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


def _header(path: str | Path) -> list[str]:
    first = pl.scan_lines(path).head(1).collect()
    if first.height == 0:
        raise ValueError(f"{path}: empty file; expected an Avazu CSV with a header line")
    return [name.strip() for name in first.item().lstrip("\ufeff").split(",")]


def avazu_schema(
    categorical_ids: CategoricalIds = "vocabulary",
    min_count: int = 2,
    hash_buckets: int = 1 << 20,
    embedding_dim: int = 16,
) -> Schema:
    """The default schema for :func:`read_avazu` frames: ``hour_of_day`` and ``weekday``
    (small fitted vocabularies) and every categorical column (a fitted vocabulary with
    ``min_count``, or ``hash_buckets`` stable hash buckets salted by the column name)."""
    features = [FeatureSpec(name, embedding_dim=embedding_dim) for name in TIME_FEATURES]
    features += [
        categorical_feature(name, categorical_ids, min_count, hash_buckets, embedding_dim) for name in CATEGORICAL_COLUMNS
    ]
    return Schema(features=features, label="label")
