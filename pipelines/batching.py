"""Encoded record batches to :class:`recsys_embed.batch.Batch`: re-batching, a shuffle
buffer, and worker processes.

* :func:`to_batch` turns encoded rows into a ``Batch``. Every column is read from its Arrow
  buffers without copying (``np.frombuffer`` views, ``torch.from_numpy``); the only copies
  are the concatenation of the sparse features into one ``KeyedJaggedTensor`` values
  tensor and the stacking of the dense columns into ``[B, n_dense]``.
* :class:`BatchStream` is re-iterable: each pass is one epoch. With ``shuffle`` the shard
  order (Parquet row groups, text files) and a shuffle buffer are drawn from
  ``numpy.random.default_rng([seed, epoch])``: a new order per epoch, the same order for the
  same seed and epoch (``set_epoch`` picks the epoch, e.g. to replay an interrupted one).
* ``num_workers > 0`` reads and encodes shards in worker processes (a torch ``DataLoader``
  over an ``IterableDataset``; worker w takes shards w, w + W, ...; results are consumed
  round-robin), so the order is deterministic for a given seed, epoch and ``num_workers``,
  though it differs from the single-process order.

    >>> import pyarrow as pa
    >>> from recsys_embed.features import FeatureSpec
    >>> schema = Schema([FeatureSpec("item"), FeatureSpec("hist", kind="sequence", table="item", max_len=3),
    ...                  FeatureSpec("price", kind="numeric")])
    >>> rows = pa.table({"item": [2, 5], "hist": pa.array([[3, 4], []], pa.list_(pa.int64())),
    ...                  "price": pa.array([0.5, 1.5], pa.float32()), "label": pa.array([1.0, 0.0], pa.float32())})
    >>> batch = to_batch(rows, schema)
    >>> batch.sparse.keys(), batch.sparse.values().tolist(), batch.sparse.lengths().tolist()
    (['item', 'hist'], [2, 5, 3, 4], [1, 1, 2, 0])
    >>> batch.dense.tolist(), batch.labels.tolist(), batch.groups
    ([[0.5], [1.5]], [1.0, 0.0], None)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.batch import Batch
from recsys_embed.features import Schema
from recsys_embed.pipelines.encode import GROUP_COLUMN, LABEL_COLUMN, Encoder
from recsys_embed.pipelines.fit import read_shards
from recsys_embed.pipelines.prefetch import prefetch
from recsys_embed.pipelines.sources import Shard

READ_ROWS = 262_144


def _numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.to_numpy()


def to_batch(rows: pa.Table | pa.RecordBatch, schema: Schema) -> Batch:
    """Encoded rows (``Pipeline.transform`` output) as a ``Batch`` of B = ``rows.num_rows``.

    ``sparse``: keys = ``schema.sparse_features`` in order, int64 values, int32 lengths
    (1 per row for categorical features, the list lengths for sequences).
    ``dense``: ``[B, n_dense]`` float32; ``labels``: ``[B]`` float32 (empty without a label
    column); ``groups``: ``[B]`` int64 or None.
    """
    n = rows.num_rows
    sparse_specs, dense_specs = schema.sparse_features, schema.dense_features
    values, per_key = [], []
    lengths = np.ones(n * len(sparse_specs), np.int32)  # categorical bags hold one id
    for k, spec in enumerate(sparse_specs):
        column = rows.column(spec.name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if spec.is_sequence:
            flat = pc.list_flatten(column).to_numpy()
            lengths[k * n : (k + 1) * n] = pc.list_value_length(column).to_numpy()
        else:
            flat = column.to_numpy()
        values.append(flat)
        per_key.append(int(flat.size))
    sparse = KeyedJaggedTensor(
        keys=[s.name for s in sparse_specs],
        values=torch.from_numpy(np.concatenate(values) if values else np.zeros(0, np.int64)),
        lengths=torch.from_numpy(lengths),
        stride=n,
        length_per_key=per_key,
    )
    dense = np.empty((n, len(dense_specs)), np.float32)
    for i, spec in enumerate(dense_specs):
        dense[:, i] = _numpy(rows.column(spec.name))
    names = rows.schema.names
    labels = _numpy(rows.column(LABEL_COLUMN)).copy() if LABEL_COLUMN in names else np.zeros(0, np.float32)
    groups = torch.from_numpy(_numpy(rows.column(GROUP_COLUMN)).copy()) if GROUP_COLUMN in names else None
    return Batch(sparse=sparse, dense=torch.from_numpy(dense), labels=torch.from_numpy(labels), groups=groups)


def encode_shards(encoder: Encoder, shards: list[Shard], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Read and encode ``shards`` in order; yields batches of at most ``batch_rows`` rows.
    Reading and encoding go ``READ_ROWS`` rows at a time at least (fewer calls, one Parquet
    dictionary per row group), each in its own read-ahead thread (:func:`prefetch`: on two
    cores the next batch is read while this one is encoded); the result is sliced without
    copying."""
    read = prefetch(read_shards(shards, encoder.read_spec, max(batch_rows, READ_ROWS)))
    for encoded in prefetch(encoder(batch, shard.name, first_row) for shard, first_row, batch in read):
        for start in range(0, encoded.num_rows, batch_rows):
            yield encoded.slice(start, batch_rows)


class _EncodedShards(IterableDataset):
    """Encoded record batches of a list of shards; in a worker, only its share of them,
    handed over in shared memory (:func:`_to_shared`)."""

    def __init__(self, encoder: Encoder, shards: list[Shard], batch_rows: int) -> None:
        self.encoder = encoder
        self.shards = shards
        self.batch_rows = batch_rows

    def __iter__(self) -> Iterator[pa.RecordBatch | list[tuple[str, torch.Tensor, torch.Tensor | None]]]:
        info = get_worker_info()
        if info is None:
            return encode_shards(self.encoder, self.shards, self.batch_rows)
        return map(_to_shared, encode_shards(self.encoder, self.shards[info.id :: info.num_workers], self.batch_rows))


def _shared_copy(array: np.ndarray) -> torch.Tensor:
    tensor = torch.empty(array.shape, dtype=torch.from_numpy(np.empty(0, array.dtype)).dtype).share_memory_()
    tensor.numpy()[:] = array
    return tensor


def _to_shared(batch: pa.RecordBatch) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """An encoded batch as tensors in shared memory (one copy; the receiving process maps
    them), ``(name, values, offsets or None)`` per column, instead of a pickled byte stream."""
    out = []
    for name, column in zip(batch.schema.names, batch.columns):
        if pa.types.is_list(column.type):
            offsets = column.offsets.to_numpy()
            flat = pc.list_flatten(column).to_numpy()
            out.append((name, _shared_copy(flat), _shared_copy(offsets - offsets[0])))
        else:
            out.append((name, _shared_copy(column.to_numpy()), None))
    return out


def _from_shared(columns: list[tuple[str, torch.Tensor, torch.Tensor | None]]) -> pa.RecordBatch:
    arrays = [
        pa.array(values.numpy()) if offsets is None else pa.ListArray.from_arrays(pa.array(offsets.numpy()), pa.array(values.numpy()))
        for _, values, offsets in columns
    ]
    return pa.RecordBatch.from_arrays(arrays, names=[name for name, _, _ in columns])


def _as_is(item: list[tuple[str, torch.Tensor, torch.Tensor | None]]) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    return item


class BatchStream:
    """A re-iterable stream of :class:`Batch` over a source; iterating is one epoch.

    Made by :meth:`recsys_embed.pipelines.Pipeline.batches`; ``len()`` is the number of
    batches per epoch when every shard's row count is known (Parquet, frames).
    """

    def __init__(
        self,
        encoder: Encoder,
        shards: list[Shard],
        batch_size: int = 4096,
        shuffle: bool = False,
        shuffle_buffer: int = 262_144,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
        batch_rows: int = 65_536,
    ) -> None:
        for name, value, low in (("batch_size", batch_size, 1), ("shuffle_buffer", shuffle_buffer, 1),
                                 ("num_workers", num_workers, 0), ("batch_rows", batch_rows, 1)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"batches: {name} must be an integer >= {low}, got {value!r}")
        self.encoder = encoder
        self.shards = shards
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.shuffle_buffer = max(shuffle_buffer, 2 * batch_size)
        self.seed = seed
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.batch_rows = batch_rows
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (passes then count up from it)."""
        self.epoch = epoch

    @property
    def num_rows(self) -> int | None:
        counts = [s.num_rows for s in self.shards]
        return None if None in counts else sum(counts)  # type: ignore[arg-type]

    def __len__(self) -> int:
        rows = self.num_rows
        if rows is None:
            raise TypeError("the number of batches of a text-file or lazy-frame source is unknown until it is read")
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        rng = np.random.default_rng([self.seed, epoch])
        shards = self.shards
        if self.shuffle:
            shards = [shards[i] for i in rng.permutation(len(shards))]
        encoded = self._encoded(shards)
        tables = _shuffled(encoded, self.batch_size, self.shuffle_buffer, rng) if self.shuffle else _rebatched(encoded, self.batch_size)
        schema = self.encoder.schema
        for table in tables:
            if table.num_rows == self.batch_size or not self.drop_last:
                yield to_batch(table, schema)

    def _encoded(self, shards: list[Shard]) -> Iterable[pa.RecordBatch]:
        dataset = _EncodedShards(self.encoder, shards, self.batch_rows)
        if self.num_workers == 0:
            return dataset
        loader = DataLoader(dataset, batch_size=None, num_workers=self.num_workers, collate_fn=_as_is, prefetch_factor=2)
        return map(_from_shared, loader)


def _rebatched(encoded: Iterable[pa.RecordBatch], batch_size: int) -> Iterator[pa.Table]:
    """Consecutive slices of ``batch_size`` rows (the last one may be shorter)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in encoded:
        pending.append(batch)
        count += batch.num_rows
        if count >= batch_size:
            table = pa.Table.from_batches(pending)
            start = 0
            while count - start >= batch_size:
                yield table.slice(start, batch_size)
                start += batch_size
            pending, count = table.slice(start).to_batches(), count - start
    if count:
        yield pa.Table.from_batches(pending)


def _shuffled(encoded: Iterable[pa.RecordBatch], batch_size: int, buffer_rows: int, rng: np.random.Generator) -> Iterator[pa.Table]:
    """Batches drawn from a shuffle buffer: when it holds ``buffer_rows`` rows it is permuted,
    everything above half of it leaves as batches and the rest waits for the next refill."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in encoded:
        pending.append(batch)
        count += batch.num_rows
        if count >= buffer_rows:
            table = pa.Table.from_batches(pending).take(pa.array(rng.permutation(count)))
            emit = (count - buffer_rows // 2) // batch_size * batch_size
            for start in range(0, emit, batch_size):
                yield table.slice(start, batch_size)
            pending, count = table.slice(emit).to_batches(), count - emit
    if count:
        table = pa.Table.from_batches(pending).take(pa.array(rng.permutation(count)))
        for start in range(0, count, batch_size):
            yield table.slice(start, batch_size)
