"""Issue 13, silent corruption inside Parquet: a flipped bit in a data page is an error naming
the file when the page carries a CRC (as the files this library writes do), and goes unnoticed
only where the writer recorded none (the documented limit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.pipelines import Pipeline
from recsys_embed.pipelines.sources import ReadSpec, read_shard, shards_of

MARK = 0x1122334455667788
SCHEMA = Schema([FeatureSpec("item", embedding_dim=4)])


def write_and_flip(path: Path, checksums: bool) -> None:
    """A page of plain int64 values, then one bit flipped inside the value ``MARK``."""
    values = np.arange(1000, dtype=np.int64)
    values[500] = MARK
    pq.write_table(pa.table({"item": values, "label": np.zeros(1000, np.int64)}), path, compression="none",
                   use_dictionary=False, write_statistics=False, write_page_checksum=checksums)  # fmt: skip
    raw = bytearray(path.read_bytes())
    at = raw.index(MARK.to_bytes(8, "little"))  # only in the page: no statistics written
    assert raw.count(MARK.to_bytes(8, "little")) == 1
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))


def read_items(path: Path) -> list[int]:
    return [v for shard in shards_of(path) for _, batch in read_shard(shard, ReadSpec(columns=("item",)), 4096)
            for v in batch.column("item").to_pylist()]  # fmt: skip


def test_a_flipped_bit_in_a_page_with_a_checksum_is_an_error_naming_the_file(tmp_path: Path) -> None:
    write_and_flip(tmp_path / "data.parquet", checksums=True)
    with pytest.raises(ValueError, match=r"data\.parquet: cannot read row group 0 near row 0 \(truncated or corrupt\?\): .*CRC"):
        read_items(tmp_path / "data.parquet")
    with pytest.raises(ValueError, match=r"data\.parquet: .*CRC"):
        Pipeline(SCHEMA).fit(tmp_path / "data.parquet")


def test_a_flipped_bit_in_a_page_without_a_checksum_goes_unnoticed(tmp_path: Path) -> None:
    write_and_flip(tmp_path / "data.parquet", checksums=False)
    items = read_items(tmp_path / "data.parquet")
    assert items[500] == MARK ^ 0x01  # the documented limit: nothing to verify against
