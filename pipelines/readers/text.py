"""Line-oriented text files (delimited and JSON lines): lazy scans and an up-front check.

Polars' CSV reader silently fills a short row with nulls and reports a bad value without
its row, so every reader first runs :func:`check_delimited` or :func:`check_json_lines`:
one streaming pass over the raw lines that raises a ``ValueError`` naming the file, the
line number (1-based, physical, header included) and what was expected. Readers take
``validate=False`` to skip that pass on files already known good.

Fields are never quoted in the formats read here (Criteo, Avazu, MovieLens, Taobao), so a
field is everything between two separators; CRLF line endings and a missing final newline
are accepted, a blank line is an error (it is a row with one empty field). Gzip files
(``day_0.gz``) are read too, but polars decompresses them whole into memory: decompress
large files first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from polars.datatypes import DataType, DataTypeClass

_LINE = "line"
_LINE_NO = "_line_no"
_FIELDS = "_fields"
_COUNT = "<column count>"


@dataclass(frozen=True)
class TextColumn:
    """One column of a text file and what a valid field looks like.

    Args:
        name: column name in the returned frame (for JSON lines: the JSON key).
        dtype: type after parsing; a non-empty field must cast to it.
        required: an empty (or, in JSON, absent/null) field is an error.
        pattern: regular expression the whole field must match (checked on non-empty fields).
        meaning: words for error messages when ``pattern`` fails, e.g. ``"YYMMDDHH"``.
    """

    name: str
    dtype: DataType | DataTypeClass = pl.String
    required: bool = False
    pattern: str | None = None
    meaning: str = ""

    def expected(self) -> str:
        """What a valid field is, in words."""
        if self.pattern is not None:
            return self.meaning or f"a value matching {self.pattern!r}"
        if isinstance(self.dtype, pl.Enum):
            return f"one of {list(self.dtype.categories)}"
        if self.dtype.is_integer():
            return f"an integer ({self.dtype})"
        if self.dtype.is_float():
            return "a number"
        return "a non-empty value" if self.required else "a value"

    def is_bad(self, field: pl.Expr) -> pl.Expr:
        """True where the raw string ``field`` (null when absent) is not valid."""
        empty = field.is_null() | (field == "")
        bad = empty if self.required else pl.lit(False)
        if self.dtype != pl.String:
            bad = bad | (~empty & field.cast(self.dtype, strict=False).is_null())
        if self.pattern is not None:
            bad = bad | (~empty & ~field.str.contains(f"^(?:{self.pattern})$"))
        return bad


def scan_delimited(
    path: str | Path, columns: Sequence[TextColumn], separator: str, *, header: bool, validate: bool
) -> pl.LazyFrame:
    """Lazily scan a delimited file whose columns are ``columns`` in file order.

    With ``header=True`` the first line is skipped (callers map its names to ``columns``).
    """
    if validate:
        check_delimited(path, columns, separator, skip_lines=int(header))
    return pl.scan_csv(
        path,
        has_header=False,
        skip_lines=int(header),
        separator=separator,
        quote_char=None,
        schema={c.name: c.dtype for c in columns},
    )


@dataclass(frozen=True)
class Variant:
    """One layout of a delimited format: its field separator and whether line 1 is a header."""

    separator: str
    header: bool

    def __str__(self) -> str:
        return f"separator={self.separator!r}, header={self.header}"


def first_line(path: str | Path) -> str:
    """Line 1 of ``path`` without a byte-order mark or line ending ('' for an empty file)."""
    first = pl.scan_lines(path).head(1).collect()
    return first.item().lstrip("\ufeff").rstrip("\r") if first.height else ""


def pick_variant(
    path: str | Path, variants: Sequence[Variant], names: Sequence[str], reader: str,
    separator: str | None = None, header: bool | None = None,
) -> Variant:
    """The variant of ``path``: ``separator`` and ``header`` as given, the rest sniffed from
    line 1: the separators of ``variants`` on it (or ``separator``), and a header when its
    first field is one of the column ``names``; the first of ``variants`` that fits both wins,
    else the first that fits the separator. Raises ``ValueError`` naming the variants tried
    and the options when no separator fits."""
    if separator is not None and header is not None:
        return Variant(separator, header)
    line = first_line(path)
    if not line:
        return Variant(separator or variants[0].separator, bool(header))  # an empty file: the scan says so
    fits = [v for v in variants if (separator or v.separator) in line and header in (None, v.header)]
    if separator is not None and not fits:
        fits = [Variant(separator, bool(header))]
    if not fits:
        tried = "; ".join(str(v) for v in variants)
        raise ValueError(
            f"{path}: line 1 {line[:80]!r} fits none of the {reader} variants tried ({tried}); "
            f"pass separator=... and header=True/False to {reader}() for another layout"
        )
    named = line.split(separator or fits[0].separator)[0].strip() in names
    variant = next((v for v in fits if header is not None or v.header == named), fits[0])
    return Variant(separator or variant.separator, variant.header if header is None else header)


def tell_variant(err: ValueError, variant: Variant, variants: Sequence[Variant], reader: str) -> ValueError:
    """``err`` with the variant it was read as and how to pass another."""
    others = "; ".join(str(v) for v in variants if v != variant) or "none"
    return ValueError(
        f"{err} (read as {variant}; other variants: {others}; pass separator=... and header=... to {reader}() to choose)"
    )


def header_columns(
    path: str | Path, names: Sequence[str], known: Mapping[str, TextColumn], optional: Sequence[str], reader: str
) -> list[TextColumn]:
    """The columns of a header line ``names`` (in file order): every name of ``known`` but
    ``optional`` must be there, once, and no other."""
    missing = [name for name in known if name not in optional and name not in names]
    unknown = [name for name in names if name not in known]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if missing or unknown or duplicated:
        raise ValueError(
            f"{path}: the header (line 1) does not name the {reader} columns: missing {missing}, "
            f"unknown {unknown}, duplicated {duplicated}; expected {list(known)} (optional: {list(optional)})"
        )
    return [known[name] for name in names]


def scan_named(
    path: str | Path, columns: Sequence[TextColumn], separator: str, rename: Mapping[str, str], *, validate: bool
) -> pl.LazyFrame:
    """Lazily scan a delimited file with a header line and maybe quoted fields: its columns
    renamed by ``rename`` (file name -> ours), ``columns`` (by our name) checked and cast, the
    other columns kept as strings. Line numbers in errors count the header as line 1 (a quoted
    field spanning lines shifts them)."""
    frame = pl.scan_csv(path, separator=separator, infer_schema=False, quote_char='"').rename(rename, strict=False)
    names = frame.collect_schema().names()
    missing = [c.name for c in columns if c.required and c.name not in names]
    if missing:
        aliases = [theirs for theirs, ours in rename.items() if ours in missing]
        raise ValueError(
            f"{path}: the header (line 1) lacks column(s) {missing} (or a name read as them: {aliases}); "
            f"it has {names}; pass columns={{our name: the file's name}} to map others"
        )
    present = [c for c in columns if c.name in names]
    if validate:
        lines = frame.with_row_index(_LINE_NO, offset=2)
        bad = _first_bad(path, lines, {c.name: c.is_bad(pl.col(c.name)) for c in present})
        if bad is not None:
            line_no, row, failed = bad
            column = next(c for c in present if c.name == failed)
            raise ValueError(f"{path}: line {line_no}, column {failed!r}: expected {column.expected()}, got {row[failed]!r}")
    return frame.with_columns(pl.col(c.name).cast(c.dtype) for c in present)


def check_delimited(path: str | Path, columns: Sequence[TextColumn], separator: str, *, skip_lines: int = 0) -> None:
    """Raise ``ValueError`` at the first line with the wrong number of fields or a bad field.

    ``separator`` may be several characters (MovieLens ``::``).
    """
    fields = pl.col(_FIELDS)
    checks = {_COUNT: fields.list.len() != len(columns)}
    for i, column in enumerate(columns):
        checks[column.name] = column.is_bad(fields.list.get(i, null_on_oob=True))
    lines = _numbered_lines(path, skip_lines).with_columns(pl.col(_LINE).str.split(separator).alias(_FIELDS))
    bad = _first_bad(path, lines, checks)
    if bad is None:
        return
    line_no, row, failed = bad
    found = row[_FIELDS]
    if failed == _COUNT:
        names = [c.name for c in columns]
        shown = ", ".join(names) if len(names) <= 8 else f"{', '.join(names[:4])}, ..., {names[-1]}"
        blank = " (it is blank)" if found == [""] else ""
        raise ValueError(
            f"{path}: line {line_no} has {len(found)} column(s) separated by {separator!r}{blank}, "
            f"expected {len(columns)} ({shown})"
        )
    column = next(c for c in columns if c.name == failed)
    value = found[[c.name for c in columns].index(failed)]
    raise ValueError(f"{path}: line {line_no}, column {failed!r}: expected {column.expected()}, got {value!r}")


def check_json_lines(path: str | Path, columns: Sequence[TextColumn]) -> None:
    """Raise ``ValueError`` at the first non-blank line that is not a JSON object with valid ``columns``.

    A key that is absent, null or not valid JSON counts as empty (so it fails ``required``).
    """
    checks = {c.name: c.is_bad(pl.col(_LINE).str.json_path_match(f"$.{c.name}")) for c in columns}
    lines = _numbered_lines(path, 0).filter(pl.col(_LINE).str.strip_chars() != "")
    bad = _first_bad(path, lines, checks)
    if bad is None:
        return
    line_no, row, failed = bad
    column = next(c for c in columns if c.name == failed)
    text = row[_LINE] if len(row[_LINE]) <= 120 else row[_LINE][:117] + "..."
    raise ValueError(
        f"{path}: line {line_no}, field {failed!r}: expected {column.expected()} "
        f"({'required; ' if column.required else ''}the line must be a JSON object), got line {text!r}"
    )


def _numbered_lines(path: str | Path, skip_lines: int) -> pl.LazyFrame:
    return pl.scan_lines(path, name=_LINE, row_index_name=_LINE_NO, row_index_offset=1).slice(skip_lines)


def _first_bad(
    path: str | Path, lines: pl.LazyFrame, checks: dict[str, pl.Expr]
) -> tuple[int, dict, str] | None:
    """(line number, row, first failed check) of the first bad line, or None; raises on an empty file."""
    any_bad = pl.any_horizontal(list(checks.values()))
    summary = lines.select(
        pl.len().alias("rows"), pl.col(_LINE_NO).filter(any_bad).min().alias("first_bad")
    ).collect(engine="streaming")
    if summary["rows"][0] == 0:
        raise ValueError(f"{path}: no data lines")
    line_no = summary["first_bad"][0]
    if line_no is None:
        return None
    flags = {f"_bad {name}": check for name, check in checks.items()}
    row = lines.filter(pl.col(_LINE_NO) == line_no).with_columns(**flags).collect().row(0, named=True)
    failed = next(name for name in checks if row[f"_bad {name}"])
    return int(line_no), row, failed
