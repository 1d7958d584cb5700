"""Text data read once by a named reader (``data.reader`` of a run config) and kept as Parquet,
so every epoch streams Parquet row groups instead of parsing text again.

``converted(reader, source, folder, name)`` writes ``folder/name.parquet`` (with page checksums,
through a temporary name and a rename) and a stamp ``folder/name.json``: the reader spec and each source file's
path, size and modification time. A later call with the same stamp reuses the file; any change
(the data was replaced, another reader option) converts again.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from recsys_embed.errors import DataError
from recsys_embed.files import temp_sibling, write_text, writing
from recsys_embed.pipelines.named import named_reader

ROW_GROUP_ROWS = 262_144


def source_files(source: str | Path) -> list[Path]:
    """The files of ``source``: one file, or a glob (sorted); none is a :class:`DataError`."""
    if Path(source).is_file():
        return [Path(source)]
    found = sorted(Path(p) for p in glob.glob(str(source)) if Path(p).is_file())
    if not found:
        raise DataError(f"no file matches {source}")
    return found


def converted(reader: str | Mapping[str, Any], source: str | Path, folder: Path, name: str) -> Path:
    """``source`` (a file or a glob, files concatenated in name order) read by ``reader``, as
    ``folder/name.parquet``; reused while its stamp holds (see the module docstring)."""
    files = source_files(source)
    stamp = {
        "reader": reader if isinstance(reader, str) else dict(reader),
        "files": [{"path": str(f.resolve()), "bytes": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns} for f in files],
    }
    out, stamp_path = folder / f"{name}.parquet", folder / f"{name}.json"
    if out.exists() and stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        return out
    folder.mkdir(parents=True, exist_ok=True)
    frame = pl.concat([named_reader(reader, f) for f in files], how="vertical")
    tmp = temp_sibling(out)
    with writing(out, tmp):
        writer = None
        try:
            for chunk in frame.collect_batches(chunk_size=ROW_GROUP_ROWS):  # streaming: bounded memory
                table = chunk.to_arrow()
                writer = writer or pq.ParquetWriter(tmp, table.schema, write_page_checksum=True)
                writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        finally:  # a bad line raises mid-file: the file is closed before writing() removes it
            if writer is not None:
                writer.close()
        if writer is None:
            raise DataError(f"{source}: the {stamp['reader']} reader found no rows")
        tmp.replace(out)
    write_text(stamp_path, json.dumps(stamp, indent=2))
    return out
