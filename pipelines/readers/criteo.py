"""Criteo display-advertising logs (Kaggle ``train.txt`` / ``test.txt``, Terabyte ``day_N``).

Tab-separated, no header, no quoting: ``label, I1..I13, C1..C26`` (the test set has no
label). Samples also ship as CSV with a header line naming those columns (in any order);
:data:`VARIANTS` lists the layouts tried. ``I*`` are integer counts, empty when missing, and ``I2`` has negative values (down
to -3 in the Kaggle set); ``C*`` are 8-hex-digit hashed categories, empty when missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.pipelines.readers.schemas import CategoricalIds, categorical_feature
from recsys_embed.pipelines.readers.text import (
    TextColumn,
    Variant,
    first_line,
    header_columns,
    pick_variant,
    scan_delimited,
    tell_variant,
)

INTEGER_COLUMNS = tuple(f"I{i}" for i in range(1, 14))
CATEGORICAL_COLUMNS = tuple(f"C{i}" for i in range(1, 27))
NEGATIVE_COLUMNS = ("I2",)
VARIANTS = (Variant("\t", header=False), Variant(",", header=True), Variant("\t", header=True), Variant(",", header=False))


def criteo_columns(has_label: bool = True) -> list[TextColumn]:
    """The file's columns in order: ``label`` (Int8, required), ``I1..I13`` (Int64), ``C1..C26`` (Utf8)."""
    label = [TextColumn("label", pl.Int8, required=True)] if has_label else []
    return (
        label
        + [TextColumn(name, pl.Int64) for name in INTEGER_COLUMNS]
        + [TextColumn(name, pl.String) for name in CATEGORICAL_COLUMNS]
    )


def read_criteo(
    path: str | Path,
    has_label: bool = True,
    validate: bool = True,
    separator: str | None = None,
    header: bool | None = None,
) -> pl.LazyFrame:
    """Scan a Criteo file lazily: the original TSV, or a CSV with a header line.

    Returns columns ``label`` (Int8, only with ``has_label``), ``I1..I13`` (Int64, null when
    empty) and ``C1..C26`` (Utf8, null when empty), one row per line.

    ``separator`` and ``header`` default to what line 1 shows: the first separator of
    :data:`VARIANTS` found on it, and a header when its first field is a column name. A header
    names the columns in any order and decides ``has_label`` (a ``label`` column or not).

    ``validate`` first checks every line (one streaming pass): a line with the wrong number
    of columns or a non-integer label/count raises ``ValueError`` with the file and line, the
    variant it was read as and the options that pick another.

    Example::

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.txt"
        >>> _ = path.write_text("1\\t5\\t-1" + "\\t" * 11 + "\\t68fd1e64" + "\\t" * 25 + "\\n")
        >>> read_criteo(path).select("label", "I1", "I2", "I3", "C1", "C2").collect().row(0)
        (1, 5, -1, None, '68fd1e64', None)
        >>> csv = path.with_name("sample.csv")
        >>> names = ["label", *INTEGER_COLUMNS, *CATEGORICAL_COLUMNS]
        >>> _ = csv.write_text(",".join(names) + "\\n" + "0,1" + "," * 38 + "\\n")
        >>> read_criteo(csv).select("label", "I1", "C26").collect().row(0)
        (0, 1, None)
    """
    known = {c.name: c for c in criteo_columns(True)}
    variant = pick_variant(path, VARIANTS, list(known), "read_criteo", separator, header)
    try:
        if variant.header:
            names = [name.strip() for name in first_line(path).split(variant.separator)]
            columns = header_columns(path, names, known, ("label",), "Criteo")
        else:
            columns = criteo_columns(has_label)
        frame = scan_delimited(path, columns, variant.separator, header=variant.header, validate=validate)
    except ValueError as err:
        raise tell_variant(err, variant, VARIANTS, "read_criteo") from None
    return frame.select(name for name in known if name in {c.name for c in columns})


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
