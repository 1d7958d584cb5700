"""Atomic Parquet output: derived data is written into a temporary folder beside the target
and renamed into place only once complete, so a crash never leaves a half-written dataset."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from recsys_embed.files import owned_sibling, remove, remove_leftovers


@contextmanager
def atomic_directory(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder that becomes ``out_dir`` when the block exits cleanly.

    On an exception the temporary folder is deleted and ``out_dir`` is left as it was. An
    existing ``out_dir`` raises ``FileExistsError`` unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; pass overwrite=True to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out_dir, "tmp")  # of killed runs
    tmp = owned_sibling(out_dir, "tmp")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    if out_dir.exists():
        old = owned_sibling(out_dir, "old")
        out_dir.rename(old)
        tmp.rename(out_dir)
        remove(old)
    else:
        tmp.rename(out_dir)


def write_parquet_dir(
    frames: Mapping[str, pl.DataFrame | pl.LazyFrame], out_dir: str | Path, overwrite: bool = False
) -> Path:
    """Write each frame to ``out_dir/<name>.parquet`` atomically (lazy frames are streamed).

    Example::

        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "splits"
        >>> _ = write_parquet_dir({"train": pl.DataFrame({"x": [1, 2]}), "test": pl.LazyFrame({"x": [3]})}, out)
        >>> sorted(p.name for p in out.iterdir()), pl.read_parquet(out / "train.parquet")["x"].to_list()
        (['test.parquet', 'train.parquet'], [1, 2])
    """
    with atomic_directory(out_dir, overwrite) as tmp:
        for name, frame in frames.items():
            if isinstance(frame, pl.LazyFrame):
                frame.sink_parquet(tmp / f"{name}.parquet")
            else:
                frame.write_parquet(tmp / f"{name}.parquet")
    return Path(out_dir)
