"""libFM / SVMlight-style files: one sample per line, ``label idx:value idx:value ...``.

Labels are ``-1``/``1`` or ``0``/``1`` (``+1`` too), mapped to ``label`` 0/1; tokens are a
non-negative integer feature index, a colon and a number. Each field (a group of indices, e.g.
the ids of one categorical column) becomes two columns: the index (``Int64``, the categorical
value) and its value (``Float32``, kept for features that are not 0/1 indicators); a line
without a token of a field has nulls there. Fields are:

* given as a mapping ``{name: range(lo, hi)}`` (or ``(lo, hi)`` pairs, ``hi`` excluded), or as
  a list of boundaries ``[b0, b1, ..., bk]``: fields ``field_0 .. field_{k-1}``, field ``i``
  holding indices ``b_i <= idx < b_{i+1}``;
* else inferred: when every line has the same number of tokens, each position on the line is a
  field (``field_0`` is the first token after the label), as in the NFM/AFM/AFN copies of
  Frappe, MovieLens and Criteo; otherwise fields are contiguous index blocks read off the
  lines with the most tokens: position ``i`` of those lines spans indices ``[lo_i, hi_i]``,
  and when these spans are disjoint and increasing, field ``i`` starts at ``lo_i``.

A line with two tokens of one field, an index outside every field, a bad label or token is a
``ValueError`` naming the file, the line and the token. The file is parsed whole, in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Union

import numpy as np
import polars as pl

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.pipelines.readers.schemas import CategoricalIds, categorical_feature

Fields = Union[Mapping[str, Union[range, tuple[int, int]]], Sequence[int]]
VALUE_SUFFIX = "_value"
_TOKEN = r"^(\d{1,18}):([^:\s]+)$"
_FORMAT = "'label idx:value idx:value ...' with labels in {-1, 1} or {0, 1}"


def read_libfm(path: str | Path, fields: Fields | None = None) -> pl.LazyFrame:
    """Read a libFM file: ``label`` (Int8, 0/1), then per field ``<name>`` (Int64, the index)
    and ``<name>_value`` (Float32), fields in index order (see the module docstring).

    Example::

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "frappe.train.libfm"
        >>> _ = path.write_text("-1 3:1 12:1\\n1 5:1 10:0.5\\n")
        >>> read_libfm(path).collect().rows()
        [(0, 3, 1.0, 12, 1.0), (1, 5, 1.0, 10, 0.5)]
        >>> read_libfm(path, fields={"user": range(0, 10), "item": range(10, 20)}).collect().columns
        ['label', 'user', 'user_value', 'item', 'item_value']
    """
    tokens = _tokens(path)
    names, field = _fields(path, tokens, fields)
    tokens = tokens.with_columns(field=field)
    _check_one_per_field(path, tokens, names)
    wide = tokens.group_by("line", maintain_order=True).agg(
        pl.col("label").first(),
        *(pl.col("index").filter(pl.col("field") == i).first().alias(name) for i, name in enumerate(names)),
        *(pl.col("value").filter(pl.col("field") == i).first().cast(pl.Float32).alias(name + VALUE_SUFFIX)
          for i, name in enumerate(names)),
    )  # fmt: skip
    return wide.select("label", *(c for name in names for c in (name, name + VALUE_SUFFIX))).lazy()


def _tokens(path: str | Path) -> pl.DataFrame:
    """One row per feature token (a line without any: one row of nulls): ``line``, ``label``
    (Int8 0/1), ``position`` (0-based, after the label), ``count`` (tokens on the line),
    ``index``, ``value``; raises on a bad label or token."""
    lines = (
        pl.scan_lines(path, name="text", row_index_name="line", row_index_offset=1)
        .with_columns(pl.col("text").str.extract_all(r"\S+").alias("words"))
        .filter(pl.col("words").list.len() > 0)
        .collect()
    )
    if lines.height == 0:
        raise ValueError(f"{path}: no data lines; expected {_FORMAT}")
    raw_label = lines["words"].list.first()
    label = raw_label.cast(pl.Float64, strict=False)
    bad = lines.filter(~label.is_in([-1.0, 0.0, 1.0]).fill_null(False) | label.is_null())
    if bad.height:
        line, word = bad["line"][0], bad["words"][0][0]
        raise ValueError(f"{path}: line {line}: label {word!r} is not -1, 0 or 1; expected {_FORMAT}")
    if (label == -1).any() and (label == 0).any():
        line = lines["line"].filter(label == 0)[0]
        raise ValueError(f"{path}: line {line}: label 0 in a file that also has -1 labels; expected {_FORMAT}")
    lines = lines.with_columns(
        label=(label > 0).cast(pl.Int8),
        words=pl.col("words").list.slice(1),
        count=pl.col("words").list.len() - 1,
    )
    tokens = lines.with_columns(position=pl.int_ranges(0, pl.col("count"))).explode("words", "position")
    parts = tokens["words"].str.extract_groups(_TOKEN)
    tokens = tokens.with_columns(
        index=parts.struct.field("1").cast(pl.Int64), value=parts.struct.field("2").cast(pl.Float64, strict=False)
    )
    bad = tokens.filter(pl.col("words").is_not_null() & (pl.col("index").is_null() | pl.col("value").is_null()))
    if bad.height:
        row = bad.row(0, named=True)
        raise ValueError(
            f"{path}: line {row['line']}, token {row['position'] + 2} {row['words'][:40]!r}: expected "
            f"'index:value' (a non-negative integer, a colon, a number); lines are {_FORMAT}"
        )
    return tokens.select("line", "label", "position", "count", "index", "value")


def _fields(path: str | Path, tokens: pl.DataFrame, fields: Fields | None) -> tuple[list[str], pl.Expr]:
    """Field names and an expression giving each token's field number (null: outside every field)."""
    if fields is None:
        counts = tokens["count"].unique()
        if counts.len() == 1:
            return [f"field_{i}" for i in range(int(counts[0]))], pl.col("position")
        fields = _inferred_boundaries(path, tokens)
    if isinstance(fields, Mapping):
        spans = sorted((_span(path, name, span), name) for name, span in fields.items())
        for (lo, hi), name in spans:
            if hi <= lo:
                raise ValueError(f"{path}: field {name!r}: empty index range [{lo}, {hi})")
        for ((_, hi), a), ((lo, _), b) in zip(spans, spans[1:]):
            if lo < hi:
                raise ValueError(f"{path}: fields {a!r} and {b!r} overlap (index {lo}); give disjoint ranges")
        names = [name for _, name in spans]
        bounds = [(lo, hi) for (lo, hi), _ in spans]
    else:
        edges = [int(b) for b in fields]
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"{path}: field boundaries must be 2 or more increasing integers, got {list(fields)}")
        names = [f"field_{i}" for i in range(len(edges) - 1)]
        bounds = list(zip(edges, edges[1:]))
    field = pl.lit(None, pl.Int64)
    for i, (lo, hi) in reversed(list(enumerate(bounds))):
        field = pl.when((pl.col("index") >= lo) & (pl.col("index") < hi)).then(pl.lit(i, pl.Int64)).otherwise(field)
    outside = tokens.filter(pl.col("index").is_not_null() & field.is_null())
    if outside.height:
        row = outside.row(0, named=True)
        raise ValueError(
            f"{path}: line {row['line']}, token {row['position'] + 2}: index {row['index']} is in no field "
            f"(fields {dict(zip(names, bounds))}); pass fields= covering it"
        )
    return names, field


def _span(path: str | Path, name: str, span: range | tuple[int, int]) -> tuple[int, int]:
    if isinstance(span, range) and span.step == 1:
        return span.start, span.stop
    if isinstance(span, (tuple, list)) and len(span) == 2:
        return int(span[0]), int(span[1])
    raise ValueError(f"{path}: field {name!r}: expected range(lo, hi) or (lo, hi), got {span!r}")


def _inferred_boundaries(path: str | Path, tokens: pl.DataFrame) -> list[int]:
    """Field starts from the lines with the most tokens (see the module docstring), and one
    past the largest index."""
    longest = tokens.filter(pl.col("count") == pl.col("count").max())
    spans = longest.group_by("position").agg(lo=pl.col("index").min(), hi=pl.col("index").max()).sort("position")
    lo, hi = spans["lo"].to_numpy(), spans["hi"].to_numpy()
    if len(lo) == 0 or not (lo[1:] > hi[:-1]).all():
        raise ValueError(
            f"{path}: lines have different numbers of tokens and the positions of the longest lines span "
            f"overlapping index ranges, so the fields cannot be inferred; pass fields={{name: range(lo, hi)}} "
            "or fields=[boundaries]"
        )
    return [0, *lo[1:].tolist(), int(np.nanmax(tokens["index"].to_numpy())) + 1]


def _check_one_per_field(path: str | Path, tokens: pl.DataFrame, names: list[str]) -> None:
    later = pl.int_range(pl.len()).over("line", "field") > 0  # tokens are in line order
    repeated = tokens.filter(pl.col("field").is_not_null() & later)
    if repeated.height:
        row = repeated.row(0, named=True)
        raise ValueError(
            f"{path}: line {row['line']}, token {row['position'] + 2}: index {row['index']} is a second token of "
            f"field {names[row['field']]!r} on the line; a field holds one token per line: pass fields= that separate them"
        )


def libfm_schema(
    fields: int | Sequence[str],
    values: bool = False,
    categorical_ids: CategoricalIds = "vocabulary",
    min_count: int = 1,
    hash_buckets: int = 1 << 20,
    embedding_dim: int = 16,
) -> Schema:
    """The default schema for :func:`read_libfm` frames: each field a categorical feature
    (``fields``: their names, or a count for ``field_0 ..``), and with ``values`` each
    field's value column as a numeric feature (for files whose values are not all 1)."""
    names = [f"field_{i}" for i in range(fields)] if isinstance(fields, int) else list(fields)
    features = [categorical_feature(name, categorical_ids, min_count, hash_buckets, embedding_dim) for name in names]
    if values:
        features += [FeatureSpec(name + VALUE_SUFFIX, kind="numeric") for name in names]
    return Schema(features=features, label="label")
