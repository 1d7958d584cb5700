"""Criteo display-advertising logs (Kaggle ``train.txt`` / ``test.txt``, Terabyte ``day_N``).

Tab-separated, no header, no quoting: ``label, I1..I13, C1..C26`` (the test set has no
label). ``I*`` are integer counts, empty when missing, and ``I2`` has negative values (down
to -3 in the Kaggle set); ``C*`` are 8-hex-digit hashed categories, empty when missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.pipelines.readers.schemas import CategoricalIds, categorical_feature
from recsys_embed.pipelines.readers.text import TextColumn, scan_delimited

INTEGER_COLUMNS = tuple(f"I{i}" for i in range(1, 14))
CATEGORICAL_COLUMNS = tuple(f"C{i}" for i in range(1, 27))
NEGATIVE_COLUMNS = ("I2",)


def criteo_columns(has_label: bool = True) -> list[TextColumn]:
    """The file's columns in order: ``label`` (Int8, required), ``I1..I13`` (Int64), ``C1..C26`` (Utf8)."""
    label = [TextColumn("label", pl.Int8, required=True)] if has_label else []
    return (
        label
        + [TextColumn(name, pl.Int64) for name in INTEGER_COLUMNS]
        + [TextColumn(name, pl.String) for name in CATEGORICAL_COLUMNS]
    )


def read_criteo(path: str | Path, has_label: bool = True, validate: bool = True) -> pl.LazyFrame:
    """Scan a Criteo TSV file lazily.

    Returns columns ``label`` (Int8, only with ``has_label``), ``I1..I13`` (Int64, null when
    empty) and ``C1..C26`` (Utf8, null when empty), one row per line.

    ``validate`` first checks every line (one streaming pass): a line with the wrong number
    of columns or a non-integer label/count raises ``ValueError`` with the file and line.

    Example::

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.txt"
        >>> _ = path.write_text("1\\t5\\t-1" + "\\t" * 11 + "\\t68fd1e64" + "\\t" * 25 + "\\n")
        >>> read_criteo(path).select("label", "I1", "I2", "I3", "C1", "C2").collect().row(0)
        (1, 5, -1, None, '68fd1e64', None)
    """
    return scan_delimited(path, criteo_columns(has_label), "\t", header=False, validate=validate)


def criteo_schema(
    categorical_ids: CategoricalIds = "vocabulary",
    min_count: int = 10,
    hash_buckets: int = 1 << 20,
    numeric: Literal["log1p", "bucketize"] = "log1p",
    num_buckets: int = 32,
    embedding_dim: int = 16,
) -> Schema:
    """The default schema for :func:`read_criteo` frames.

    Categoricals ``C1..C26``: a fitted vocabulary keeping values seen ``min_count`` times
    (the rest share the OOV id), or ``hash_buckets`` stable hash buckets salted by the column
    name. Numerics with ``numeric="log1p"``: ``I1, I3..I13`` are ``log1p_standardize``;
    ``I2``, which has negative values where ``log1p`` is undefined, is turned into
    ``num_buckets`` quantile buckets instead (quantiles only need an order, so no clipping
    loses the negatives). ``numeric="bucketize"`` buckets all thirteen.
    """
    if numeric not in ("log1p", "bucketize"):
        raise ValueError(f"criteo_schema: numeric must be 'log1p' or 'bucketize', got {numeric!r}")
    features = []
    for name in INTEGER_COLUMNS:
        if numeric == "bucketize" or name in NEGATIVE_COLUMNS:
            features.append(FeatureSpec(name, kind="numeric", transform="bucketize", num_buckets=num_buckets,
                                        embedding_dim=embedding_dim))
        else:
            features.append(FeatureSpec(name, kind="numeric", transform="log1p_standardize"))
    features += [
        categorical_feature(name, categorical_ids, min_count, hash_buckets, embedding_dim) for name in CATEGORICAL_COLUMNS
    ]
    return Schema(features=features, label="label")
