"""Streaming train/valid/test splits written as Parquet directories.

* ``by="random"``: each row goes to a split by a stable hash of its row index and the seed;
* ``by="user"``: by a stable hash of its user (all rows of a user land in one split);
* ``by="time"``: the earliest rows to train, then valid, then test. The cut times are the
  ``fractions`` quantiles of a deterministic sample of the time column (exact up to 100k
  rows, rank error about 0.3% beyond); rows at a cut time go to the earlier split.

Fractions are exact in expectation for ``random``, by users for ``user``. Rows keep their
source order within a split. Nothing is half-written: splits are written to a temporary
folder inside ``out_dir`` and moved into place only when all of them are complete.

    >>> import tempfile, pathlib, pyarrow as pa, pyarrow.parquet as pq
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> pq.write_table(pa.table({"timestamp": list(range(100)), "x": list(range(100))}), folder / "data.parquet")
    >>> paths = split_dataset(folder / "data.parquet", folder / "splits", by="time")
    >>> {name: pq.read_table(path).num_rows for name, path in paths.items()}
    {'train': 80, 'valid': 10, 'test': 10}
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from recsys_embed.errors import ColumnTypeError
from recsys_embed.files import remove
from recsys_embed.hashing import hash_arrow, hash_int_np, seed_of
from recsys_embed.pipelines.columns import Where, is_string
from recsys_embed.pipelines.fit import RowSample
from recsys_embed.pipelines.sources import ReadSpec, Shard, Source, read_shard, shards_of

SPLIT_NAMES = {2: ("train", "test"), 3: ("train", "valid", "test")}
BY = ("random", "time", "user")


def split_dataset(
    source: Source,
    out_dir: str | os.PathLike[str],
    by: str = "random",
    fractions: tuple[float, ...] = (0.8, 0.1, 0.1),
    seed: int = 0,
    time_column: str = "timestamp",
    user_column: str = "user_id",
    rows_per_file: int = 1_000_000,
    progress: bool = False,
    names: tuple[str, ...] | None = None,
) -> dict[str, Path]:
    """Split ``source`` into ``out_dir/train``, ``out_dir/valid`` and ``out_dir/test`` (two
    fractions: train and test, unless ``names`` says otherwise, e.g. ``("train", "valid")``),
    each a folder of ``part-NNNNN.parquet`` files with all source columns. Returns split
    name -> folder."""
    if by not in BY:
        raise ValueError(f"split_dataset: by={by!r} is not one of {BY}")
    if len(fractions) not in SPLIT_NAMES or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split_dataset: fractions must be 2 or 3 non-negative numbers summing to 1, got {fractions}")
    names = tuple(names or SPLIT_NAMES[len(fractions)])
    if len(names) != len(fractions) or len(set(names)) != len(names) or not all(_folder_name(n) for n in names):
        raise ValueError(
            f"split_dataset: names must be {len(fractions)} distinct folder names (one per fraction, no '/' or leading '.'), got {names}"
        )
    cuts = np.round(np.cumsum(fractions), 12)[:-1]
    shards = shards_of(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if by == "time":
        cuts = _time_cuts(shards, time_column, cuts, seed)
    work = Path(tempfile.mkdtemp(prefix=".split-", dir=out))
    try:
        writers = [_PartWriter(work / name, rows_per_file) for name in names]
        spec = ReadSpec(columns=(), all_columns=True)
        rows = 0
        column = time_column if by == "time" else user_column
        with tqdm(total=sum(s.num_rows or 0 for s in shards) or None, unit="rows", desc="split", disable=not progress) as bar:
            for shard in shards:
                for first_row, batch in read_shard(shard, spec, 262_144):
                    split = _assign(batch, by, cuts, seed, rows, Where(shard.name, column, first_row))
                    for index, writer in enumerate(writers):
                        writer.write(batch.filter(pa.array(split == index)), shard.name)
                    rows += batch.num_rows
                    bar.update(batch.num_rows)
        for writer in writers:
            writer.close()
        for name in names:
            _replace_dir(work / name, out / name)
    finally:
        remove(work)
    return {name: out / name for name in names}


def _folder_name(name: object) -> bool:
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def _uniform(hashes: np.ndarray) -> np.ndarray:
    return (hashes >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _time_values(batch: pa.RecordBatch, where: Where) -> np.ndarray:
    column = batch.column(where.column)
    t = column.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t)):
        raise ColumnTypeError(where(f"holds {t}; a time split needs numbers, dates or timestamps"))
    if column.null_count:
        row = int(np.argmax(pc.is_null(column).to_numpy(zero_copy_only=False)))
        raise ValueError(where("the time is missing; every row needs one for a time split", row))
    if pa.types.is_temporal(t):
        column = column.cast(pa.int64()) if not pa.types.is_date32(t) else column.cast(pa.int32()).cast(pa.int64())
    return column.to_numpy().astype(np.float64)


def _time_cuts(shards: list[Shard], column: str, fractions: np.ndarray, seed: int) -> np.ndarray:
    sample = RowSample(f"time-split-{seed}", size=1_000_000)
    rows = 0
    for shard in shards:
        for first_row, batch in read_shard(shard, ReadSpec(columns=(column,)), 262_144):
            sample.add(_time_values(batch, Where(shard.name, column, first_row)), np.arange(rows, rows + batch.num_rows))
            rows += batch.num_rows
    if rows == 0:
        raise ValueError(f"split_dataset: no rows in {', '.join(sorted({s.name for s in shards}))}")
    return sample.quantiles(fractions)


def _assign(batch: pa.RecordBatch, by: str, cuts: np.ndarray, seed: int, first: int, where: Where) -> np.ndarray:
    """The split index of every row of ``batch``."""
    if by == "time":
        return np.searchsorted(cuts, _time_values(batch, where), side="left")
    if by == "random":
        u = _uniform(hash_int_np(np.arange(first, first + batch.num_rows, dtype=np.int64), seed_of(f"random-split-{seed}")))
        return np.searchsorted(cuts, u, side="right")
    if where.column not in batch.schema.names:
        raise ValueError(f"{where.source}: missing column {where.column!r} for a user split; the data has {batch.schema.names}")
    users = batch.column(where.column)
    if pa.types.is_dictionary(users.type):
        users = users.dictionary_decode()
    if not (pa.types.is_integer(users.type) or is_string(users.type)):
        raise ColumnTypeError(where(f"holds {users.type}; a user split needs integer or string user ids"))
    if users.null_count:
        row = int(np.argmax(pc.is_null(users).to_numpy(zero_copy_only=False)))
        raise ValueError(where("the user is missing; every row needs one for a user split", row))
    if pa.types.is_string_view(users.type):
        users = users.cast(pa.large_string())
    return np.searchsorted(cuts, _uniform(hash_arrow(users, seed_of(f"user-split-{seed}"))), side="right")


class _PartWriter:
    """Writes one split as ``part-NNNNN.parquet`` files of at most ``rows_per_file`` rows."""

    def __init__(self, folder: Path, rows_per_file: int) -> None:
        self.folder = folder
        self.rows_per_file = rows_per_file
        self.schema: pa.Schema | None = None
        self._writer: pq.ParquetWriter | None = None
        self._rows = 0
        self._parts = 0
        folder.mkdir(parents=True)

    def write(self, batch: pa.RecordBatch, source: str) -> None:
        if self.schema is None:
            self.schema = batch.schema
        elif batch.schema != self.schema:
            try:
                batch = batch.cast(self.schema)
            except (pa.ArrowException, ValueError) as err:
                raise ValueError(f"{source}: columns {batch.schema} differ from earlier files' {self.schema} ({err})") from None
        while batch.num_rows:
            if self._writer is None or self._rows >= self.rows_per_file:
                self._open()
            take = min(batch.num_rows, self.rows_per_file - self._rows)
            self._writer.write_batch(batch.slice(0, take))  # type: ignore[union-attr]
            self._rows += take
            batch = batch.slice(take)

    def _open(self) -> None:
        if self._writer is not None:
            self._writer.close()
        assert self.schema is not None
        self._writer = pq.ParquetWriter(self.folder / f"part-{self._parts:05d}.parquet", self.schema, write_page_checksum=True)
        self._parts += 1
        self._rows = 0

    def close(self) -> None:
        if self._writer is None and self.schema is not None:
            self._open()  # an empty split still gets one (empty) file with the columns
        if self._writer is not None:
            self._writer.close()


def _replace_dir(new: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        remove(old)
    else:
        os.replace(new, target)
