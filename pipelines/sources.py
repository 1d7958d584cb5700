"""Where rows come from: Parquet, CSV and TSV files (one file, a directory, a glob or a list
of those) or in-memory frames, read as a stream of Arrow record batches.

A source is cut into :class:`Shard` s, the unit of reading and of worker parallelism: one
Parquet row group, one text file, or one in-memory frame. Reading never loads a whole file:
Parquet goes row group by row group, text files block by block (``pyarrow.csv``).

Silent corruption: Parquet pages carry an optional CRC-32 of their bytes, verified here when
present (``page_checksum_verification``), so a flipped bit in such a page is an error naming
the file and row group instead of a changed value. The files this library writes (synthetic
data, splits, scores) carry them; a page written without one (the writer's choice: pyarrow's
default, polars, Spark) cannot be checked, and a flipped bit inside its values changes them
silently. Text files have no checksums at all.

Every error names the file (and the column and row where known) and what was expected::

    >>> import tempfile, pathlib, pyarrow as pa, pyarrow.parquet as pq
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> pq.write_table(pa.table({"item_id": [3, 4, 5]}), folder / "part-0.parquet")
    >>> [s.name.endswith("part-0.parquet") for s in shards_of(folder)]
    [True]
    >>> resolve_files(folder / "missing-*.parquet")
    Traceback (most recent call last):
    ...
    ValueError: no file matches .../missing-*.parquet
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys_embed.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")
TEXT_BLOCK_BYTES = 8 << 20

Frame = Union[pa.Table, pl.DataFrame, pl.LazyFrame]
Source = Union[str, os.PathLike, Frame, Sequence[Union[str, os.PathLike, Frame]]]


def file_format(path: Path) -> str:
    """``"parquet"`` or the field separator of a text file, from the suffix."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in PARQUET_SUFFIXES:
        return "parquet"
    if last in TEXT_SEPARATORS:
        return TEXT_SEPARATORS[last]
    known = list(PARQUET_SUFFIXES) + list(TEXT_SEPARATORS)
    raise ValueError(f"{path}: unknown file type {path.suffix!r}; expected one of {known} (text files may end in .gz)")


def _is_data_file(path: Path) -> bool:
    if path.name.startswith((".", "_")) or not path.is_file():
        return False
    try:
        file_format(path)
    except ValueError:
        return False
    return True


def resolve_files(source: str | os.PathLike[str]) -> list[Path]:
    """The data files of one path: the file itself, the data files under a directory
    (recursively, skipping names starting with ``.`` or ``_``), or a glob's matches; sorted."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if _is_data_file(p))
        if not files:
            raise ValueError(f"directory {path} holds no Parquet/CSV/TSV file")
        return files
    if path.is_file():
        file_format(path)
        return [path]
    if glob.has_magic(str(source)):
        files = sorted(Path(p) for p in glob.glob(str(source), recursive=True) if _is_data_file(Path(p)))
        if not files:
            raise ValueError(f"no file matches {source}")
        return files
    raise ValueError(f"{source}: no such file or directory")


@dataclass(frozen=True)
class Shard:
    """One unit of reading.

    Attributes:
        name: the file path (or ``<in-memory frame>``), used in messages.
        path: the file, or None for a frame.
        separator: ``"parquet"`` or a text file's field separator; None for a frame.
        row_group: the Parquet row group, or None for the whole file or frame.
        first_row: index in its file of the shard's first row (0-based, header excluded).
        num_rows: rows in the shard when known without reading it.
        frame: the in-memory frame, when the source is one.
    """

    name: str
    path: Path | None = None
    separator: str | None = None
    row_group: int | None = None
    first_row: int = 0
    num_rows: int | None = None
    frame: Frame | None = None


def _parquet_file(path: Path) -> pq.ParquetFile:
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes); expected a Parquet file")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path}: not a readable Parquet file (truncated or corrupt?): {err}") from None


def shards_of(source: Source) -> list[Shard]:
    """Cut a source into shards, in a fixed order (files sorted, row groups in file order)."""
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if not items:
        raise ValueError("the source is an empty list; expected files, directories, globs or frames")
    shards: list[Shard] = []
    for item in items:
        if isinstance(item, (pa.Table, pl.DataFrame, pl.LazyFrame)):
            rows = None if isinstance(item, pl.LazyFrame) else item.num_rows if isinstance(item, pa.Table) else item.height
            shards.append(Shard(name="<in-memory frame>", num_rows=rows, frame=item))
            continue
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"a source is a path, a glob, a pyarrow Table or a polars frame, got {type(item).__name__}")
        for path in resolve_files(item):
            separator = file_format(path)
            if separator != "parquet":
                if path.stat().st_size == 0:
                    raise ValueError(f"{path}: the file is empty (0 bytes); expected a header line and rows")
                shards.append(Shard(name=str(path), path=path, separator=separator))
                continue
            meta = _parquet_file(path).metadata
            first = 0
            for group in range(meta.num_row_groups):
                rows = meta.row_group(group).num_rows
                shards.append(Shard(str(path), path, "parquet", group, first, rows))
                first += rows
            if meta.num_row_groups == 0:
                shards.append(Shard(str(path), path, "parquet", None, 0, 0))
    return shards


@dataclass(frozen=True)
class ReadSpec:
    """What to read: ``columns`` (or ``all_columns``); ``text_types`` fixes the type of
    text-file columns (others are inferred); ``dictionary`` names the columns to read
    dictionary-encoded when Parquet stores them as strings."""

    columns: tuple[str, ...]
    text_types: tuple[tuple[str, pa.DataType], ...] = ()
    dictionary: tuple[str, ...] = ()
    all_columns: bool = False


def read_shard(shard: Shard, spec: ReadSpec, batch_rows: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Yield ``(first_row, batch)``: record batches of at most ``batch_rows`` rows with the
    spec's columns, ``first_row`` being the batch's first row index in its file."""
    if shard.frame is not None:
        yield from _read_frame(shard, spec, batch_rows)
    elif shard.separator == "parquet":
        yield from _read_parquet(shard, spec, batch_rows)
    else:
        yield from _read_text(shard, spec, batch_rows)


def _missing(shard: Shard, have: Sequence[str], want: Sequence[str]) -> None:
    missing = [c for c in want if c not in have]
    if missing:
        raise ValueError(f"{shard.name}: missing column(s) {missing}; the data has {list(have)}")


def _read_parquet(shard: Shard, spec: ReadSpec, batch_rows: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    assert shard.path is not None
    meta = _parquet_file(shard.path)
    schema = meta.schema_arrow
    columns = schema.names if spec.all_columns else list(spec.columns)
    _missing(shard, schema.names, columns)
    strings = [c for c in spec.dictionary if c in columns and is_plain_string(schema.field(c).type)]
    file = pq.ParquetFile(shard.path, read_dictionary=strings or None, metadata=meta.metadata, page_checksum_verification=True)
    groups = None if shard.row_group is None else [shard.row_group]
    row = shard.first_row
    batches = file.iter_batches(batch_size=batch_rows, row_groups=groups, columns=columns)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as err:
            where = f"row group {shard.row_group}" if shard.row_group is not None else "data"
            raise ValueError(f"{shard.name}: cannot read {where} near row {row} (truncated or corrupt?): {err}") from None
        yield row, batch
        row += batch.num_rows


def is_plain_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _read_text(shard: Shard, spec: ReadSpec, batch_rows: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    assert shard.path is not None and shard.separator is not None
    header = _text_header(shard)
    columns = header if spec.all_columns else list(spec.columns)
    _missing(shard, header, columns)
    convert = pacsv.ConvertOptions(
        include_columns=columns,
        column_types=dict(spec.text_types),
        strings_can_be_null=True,
    )
    row = 0
    try:
        stream = pa.input_stream(str(shard.path), compression="detect")
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=TEXT_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=shard.separator),
            convert_options=convert,
        )
        for block in reader:
            for start in range(0, block.num_rows, batch_rows):
                piece = block.slice(start, batch_rows)
                yield row, piece
                row += piece.num_rows
    except (pa.ArrowException, OSError) as err:
        raise DataError(_text_error(shard, header, dict(spec.text_types), err, row)) from None


def _text_error(shard: Shard, header: list[str], types: dict[str, pa.DataType], err: Exception, row: int) -> str:
    """Name the column and row of a text-file conversion error (pyarrow gives neither): the
    column is read again as raw bytes and the first value that is not UTF-8 or does not
    convert to the column's type is found by bisection."""
    match = re.search(r"CSV column #(\d+)", str(err))
    name = header[int(match.group(1))] if match and int(match.group(1)) < len(header) else None
    if name is None or name not in types:
        return f"{shard.name}: cannot read rows after row {row}: {err}"
    texts = _read_text(shard, ReadSpec(columns=(name,), text_types=((name, pa.large_binary()),)), 1 << 16)
    for first, batch in texts:
        column = batch.column(0)
        for target, expected in ((pa.large_string(), "UTF-8 text; re-encode the file as UTF-8"), (types[name], f"a {types[name]}")):
            bad = _first_not_converting(column, target)
            if bad is not None:
                return f"{shard.name}: column {name!r}, row {first + bad}: value {column[bad].as_py()!r} is not {expected} ({err})"
            column = column.cast(target)
    return f"{shard.name}: column {name!r}: {err}"


def _first_not_converting(column: pa.Array, target: pa.DataType) -> int | None:
    """The position of the first value of ``column`` that does not cast to ``target``, None if all do."""
    try:
        column.cast(target)
        return None
    except pa.ArrowInvalid:
        pass
    low, high = 0, len(column)  # the first value that does not convert lies in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        try:
            column.slice(low, middle - low).cast(target)
            low = middle
        except pa.ArrowInvalid:
            high = middle
    return low


def _text_header(shard: Shard) -> list[str]:
    assert shard.path is not None and shard.separator is not None
    head = b""
    with pa.input_stream(str(shard.path), compression="detect") as stream:
        while b"\n" not in head:
            block = stream.read(1 << 16)
            if not block:
                break
            head += block
    line = head.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")
    if not line:
        raise ValueError(f"{shard.name}: no header line; expected column names separated by {shard.separator!r}")
    return [name.strip('"') for name in line.split(shard.separator)]


def _read_frame(shard: Shard, spec: ReadSpec, batch_rows: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    frame = shard.frame
    if isinstance(frame, pl.LazyFrame):
        names = frame.collect_schema().names()
        columns = names if spec.all_columns else list(spec.columns)
        _missing(shard, names, columns)
        row = 0
        for chunk in frame.select(columns).collect_batches(chunk_size=batch_rows):
            for batch in chunk.to_arrow().to_batches(max_chunksize=batch_rows):
                yield row, batch
                row += batch.num_rows
        return
    table = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
    assert isinstance(table, pa.Table)
    columns = table.column_names if spec.all_columns else list(spec.columns)
    _missing(shard, table.column_names, columns)
    row = 0
    for batch in table.select(columns).to_batches(max_chunksize=batch_rows):
        yield row, batch
        row += batch.num_rows
