"""Batches: the Batch layout contract, re-batching, drop_last, per-epoch shuffles, workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recsys_embed.batch import Batch
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.pipelines import BatchStream, Pipeline
from recsys_embed.tables.per_feature import PerFeatureTables

ROWS = 1000


def write_data(folder: Path) -> Path:
    """Three Parquet files with several row groups; row r has item r % 50 and x = r."""
    folder.mkdir()
    r = np.arange(ROWS)
    history = [list(range(i % 7)) for i in range(ROWS)]
    table = pa.table({"item": r % 50, "hist": pa.array(history, pa.list_(pa.int64())), "x": r.astype(np.float64),
                      "y": r.astype(np.float64), "label": (r % 3 == 0).astype(np.int64), "user": r % 17})  # fmt: skip
    for i, start in enumerate((0, 300, 650)):
        stop = {0: 300, 1: 650, 2: ROWS}[i]
        pq.write_table(table.slice(start, stop - start), folder / f"part-{i}.parquet", row_group_size=128)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data(tmp_path_factory.mktemp("batches") / "data")


@pytest.fixture(scope="module")
def pipe(data: Path) -> Pipeline:
    schema = Schema(
        [FeatureSpec("item", embedding_dim=4), FeatureSpec("hist", kind="sequence", table="item", max_len=4, embedding_dim=4),
         FeatureSpec("x", kind="numeric"), FeatureSpec("y", kind="numeric", transform="standardize")],  # fmt: skip
        label="label",
        group="user",
    )
    return Pipeline(schema).fit(data)


def test_module_doctest() -> None:
    import doctest

    from recsys_embed.pipelines import batching

    assert doctest.testmod(batching).failed == 0


def rows_of(batches: list[Batch]) -> np.ndarray:
    """The source row index of every sample (dense column x is the row index)."""
    return np.concatenate([b.dense[:, 0].numpy() for b in batches]).astype(np.int64)


def test_batch_layout_matches_the_contract(pipe: Pipeline, data: Path) -> None:
    stream = pipe.batches(data, batch_size=256)
    batch = next(iter(stream))
    assert isinstance(stream, BatchStream) and batch.batch_size == 256
    kjt = batch.sparse
    assert kjt.keys() == ["item", "hist"] and kjt.values().dtype == torch.int64
    lengths = kjt.lengths().view(2, 256)
    assert lengths[0].tolist() == [1] * 256
    assert lengths[1].tolist() == [min(i % 7, 4) for i in range(256)]  # at most max_len, most recent kept
    by_key = kjt.to_dict()
    ids = {v: i + 2 for i, v in enumerate(pipe.state.tables["item"].vocabulary.to_pylist())}
    assert by_key["item"].values().tolist() == [ids[i % 50] for i in range(256)]
    assert by_key["hist"].to_dense()[6].tolist() == [ids[v] for v in (2, 3, 4, 5)]
    assert batch.dense.dtype == torch.float32 and batch.dense.shape == (256, 2)
    assert batch.dense[:, 0].tolist() == list(range(256))
    assert batch.labels.dtype == torch.float32 and batch.labels.tolist() == [float(i % 3 == 0) for i in range(256)]
    assert batch.groups is not None and batch.groups.dtype == torch.int64 and batch.groups.tolist() == [i % 17 for i in range(256)]
    tables = PerFeatureTables(pipe.schema, pipe.num_embeddings)
    assert tables(kjt).sequences["hist"].shape == (256, 4, 4)


def test_rebatching_spans_files_and_drop_last(pipe: Pipeline, data: Path) -> None:
    stream = pipe.batches(data, batch_size=300)
    batches = list(stream)
    assert [b.batch_size for b in batches] == [300, 300, 300, 100] and len(stream) == 4
    assert rows_of(batches).tolist() == list(range(ROWS))
    dropped = pipe.batches(data, batch_size=300, drop_last=True)
    assert [b.batch_size for b in dropped] == [300, 300, 300] and len(dropped) == 3


def test_shuffle_is_a_permutation_per_epoch_reproducible_by_seed(pipe: Pipeline, data: Path) -> None:
    stream = pipe.batches(data, batch_size=64, shuffle=True, shuffle_buffer=256, seed=3)
    first, second = rows_of(list(stream)), rows_of(list(stream))
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(ROWS))
    assert not np.array_equal(first, second)  # a new order each epoch
    assert not np.array_equal(first, np.arange(ROWS))
    stream.set_epoch(0)
    assert np.array_equal(rows_of(list(stream)), first)  # epoch 0 replays
    again = pipe.batches(data, batch_size=64, shuffle=True, shuffle_buffer=256, seed=3)
    assert np.array_equal(rows_of(list(again)), first)
    other = pipe.batches(data, batch_size=64, shuffle=True, shuffle_buffer=256, seed=4)
    assert not np.array_equal(rows_of(list(other)), first)
    # rows travel across files: the first batch mixes rows of more than one file
    assert len({int(r) // 300 for r in first[:64]}) > 1


def test_workers_give_every_row_once_in_a_deterministic_order(pipe: Pipeline, data: Path) -> None:
    plain = rows_of(list(pipe.batches(data, batch_size=100)))
    with_workers = pipe.batches(data, batch_size=100, num_workers=2)
    first, second = rows_of(list(with_workers)), rows_of(list(with_workers))
    assert sorted(first.tolist()) == plain.tolist()
    assert np.array_equal(first, second)
    shuffled = pipe.batches(data, batch_size=100, num_workers=2, shuffle=True, seed=1)
    a, b = rows_of(list(shuffled)), rows_of(list(shuffled))
    shuffled.set_epoch(0)
    assert sorted(a.tolist()) == plain.tolist() and not np.array_equal(a, b)
    assert np.array_equal(rows_of(list(shuffled)), a)


def test_bad_batching_arguments_are_refused(pipe: Pipeline, data: Path) -> None:
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        pipe.batches(data, batch_size=0)
    with pytest.raises(ValueError, match="num_workers must be an integer >= 0"):
        pipe.batches(data, num_workers=-1)


def test_prefetch_keeps_order_raises_in_place_and_stops_when_closed() -> None:
    import threading

    from recsys_embed.pipelines.prefetch import prefetch

    def items(fail_at: int | None):
        for i in range(10):
            if i == fail_at:
                raise ValueError(f"bad item {i}")
            yield i

    assert list(prefetch(items(None), depth=2)) == list(range(10))
    got = []
    with pytest.raises(ValueError, match="bad item 4"):
        for item in prefetch(items(4)):
            got.append(item)
    assert got == [0, 1, 2, 3]
    stream = prefetch(items(None))
    assert next(stream) == 0
    stream.close()  # the consumer stops early: the producer thread ends too
    assert not [t for t in threading.enumerate() if t.name == "recsys-embed-prefetch"]
