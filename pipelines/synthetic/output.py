"""Atomic, streaming Parquet output for the synthetic data generators.

:class:`ParquetParts` writes Arrow tables as ``part-00000.parquet``, ``part-00001.parquet``, ...
(at most ``rows_per_file`` rows each, row groups of ``row_group_size`` rows) into a temporary
sibling of the output directory and renames it into place only when every part is complete.
An error or an interrupt removes the temporary directory, so a failed run leaves nothing behind,
and the next run removes what a killed one (kill -9) left;
with ``overwrite`` an existing output directory is replaced only after the new one is complete.
Row groups depend only on the rows written, not on how the caller chunks them, so a generator
whose content is deterministic writes byte-identical files.

Example::

    >>> import tempfile, pyarrow as pa
    >>> out = Path(tempfile.mkdtemp()) / "data"
    >>> schema = pa.schema([("x", pa.int64())])
    >>> with ParquetParts(out, schema, row_group_size=2) as parts:
    ...     parts.write(pa.table({"x": [1, 2, 3]}, schema=schema))
    >>> [p.name for p in parts.files], pq.ParquetFile(parts.files[0]).num_row_groups
    (['part-00000.parquet'], 2)
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from recsys_embed.files import leftovers, owned_sibling, remove, remove_leftovers, writing

ROWS_PER_FILE = 1_000_000


def _check_output_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Validate ``out_dir`` before any work: ``ValueError`` (one line) if it cannot be written.

    It may not exist yet (missing parents are created, and removed again if the write fails);
    if it exists it must be a directory, and it must be empty unless ``overwrite``.
    """
    out = Path(out_dir).expanduser().absolute()
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"output {out} exists and is not a directory; choose a directory path")
        if any(out.iterdir()) and not overwrite:
            raise ValueError(f"output directory {out} is not empty; pass overwrite=True (--overwrite) to replace it")
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"output directory {out} is not writable: cannot create entries in {ancestor}")
    return out


class ParquetParts:
    """Context manager writing an Arrow stream as a directory of Parquet parts, atomically.

    Args:
        out_dir: the directory to create (checked by :func:`_check_output_dir`).
        schema: Arrow schema of every table passed to :meth:`write` (its metadata is kept).
        row_group_size: rows per row group (the last group of a file may be smaller).
        rows_per_file: rows per part file.
        overwrite: replace a non-empty ``out_dir`` once the new data is complete.
        compression: Parquet compression codec.
    """

    def __init__(
        self,
        out_dir: str | Path,
        schema: pa.Schema,
        row_group_size: int = 100_000,
        rows_per_file: int = ROWS_PER_FILE,
        overwrite: bool = False,
        compression: str = "zstd",
    ) -> None:
        if row_group_size <= 0:
            raise ValueError(f"row_group_size must be > 0, got {row_group_size}")
        if rows_per_file <= 0:
            raise ValueError(f"rows_per_file must be > 0, got {rows_per_file}")
        self.out_dir = _check_output_dir(out_dir, overwrite)
        self.schema = schema
        self.row_group_size = row_group_size
        self.rows_per_file = rows_per_file
        self.compression = compression
        self.files: list[Path] = []
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_file = 0
        self._tmp: Path | None = None
        self._created: list[Path] = []

    def __enter__(self) -> ParquetParts:
        missing = []
        parent = self.out_dir.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        try:
            for folder in reversed(missing):
                folder.mkdir()
                self._created.append(folder)
            self._clean_leftovers()
            self._tmp = owned_sibling(self.out_dir, "tmp")
            self._tmp.mkdir()
        except OSError as err:
            self._remove_created()
            raise ValueError(f"output directory {self.out_dir} is not writable: {err.strerror or err}") from None
        return self

    def write(self, table: pa.Table) -> None:
        """Append rows; full row groups are written out, the rest waits for more rows."""
        if not table.schema.equals(self.schema, check_metadata=False):
            raise TypeError(f"table schema {table.schema} differs from the output schema {self.schema}")
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= self._next_group_rows():
            self._write_group(self._next_group_rows())

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            try:
                self._commit()
                return
            except BaseException:
                self._abort()
                raise
        self._abort()

    def _next_group_rows(self) -> int:
        return min(self.row_group_size, self.rows_per_file - self._rows_in_file)

    def _write_group(self, n: int) -> None:
        table = pa.concat_tables(self._pending)
        group, rest = table.slice(0, n), table.slice(n)
        if self._writer is None:
            assert self._tmp is not None
            path = self._tmp / f"part-{len(self.files):05d}.parquet"
            with writing(self.out_dir / path.name):
                self._writer = pq.ParquetWriter(path, self.schema, compression=self.compression, write_page_checksum=True)
            self.files.append(self.out_dir / path.name)
        with writing(self.files[-1]):  # disk full: a WriteError naming the part; __exit__ removes the folder
            self._writer.write_table(group.replace_schema_metadata(self.schema.metadata), row_group_size=n)
        self._rows_in_file += n
        self.rows += n
        self._pending, self._pending_rows = [rest], rest.num_rows
        if self._rows_in_file == self.rows_per_file:
            self._close_file()

    def _close_file(self) -> None:
        if self._writer is not None:
            with writing(self.files[-1]):
                self._writer.close()
            self._writer, self._rows_in_file = None, 0

    def _commit(self) -> None:
        if self._pending_rows:
            self._write_group(self._pending_rows)
        self._close_file()
        assert self._tmp is not None
        if not self.out_dir.exists():
            os.replace(self._tmp, self.out_dir)
            self._tmp = None
            return
        old = owned_sibling(self.out_dir, "old")
        old.mkdir()
        os.replace(self.out_dir, old / self.out_dir.name)
        try:
            os.replace(self._tmp, self.out_dir)
        except BaseException:
            os.replace(old / self.out_dir.name, self.out_dir)  # put the old data back
            old.rmdir()
            raise
        self._tmp = None
        remove(old)

    def _clean_leftovers(self) -> None:
        """Undo what killed runs left beside ``out_dir``: their temporary folders go, and data
        moved aside by a run killed while replacing it is put back."""
        remove_leftovers(self.out_dir, "tmp")
        for old in leftovers(self.out_dir, "old"):
            if not self.out_dir.exists() and (old / self.out_dir.name).exists():
                os.replace(old / self.out_dir.name, self.out_dir)
            remove(old)

    def _abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tmp is not None:
            remove(self._tmp)
            self._tmp = None
        self._remove_created()
        self.files = []

    def _remove_created(self) -> None:
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                pass
        self._created = []
