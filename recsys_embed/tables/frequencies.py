"""How often a dataset reads each layout row: the ``n_j`` of DIN's mini-batch aware L2 (Zhou et
al. 2018, section 4.1, eq. 4-5), and the rows a batch read as slices of the layout's output.

Rows are numbered across a layout's tables ("layout rows", ``layout.num_rows()`` of them), and
``layout.rows_read(kjt)`` names, per feature and output slot, the layout row it read (the
batch's kernel inputs, computed once: :mod:`recsys_embed.tables.inputs`):

* :class:`PerFeatureTables`: table groups one after another in schema order; row ``r`` of
  table group ``t`` is ``offset_t + r`` with ``offset_t`` the rows of the groups before it.
  ``item_id`` and ``hist_item_id`` read the same rows.
* :class:`MultiplexedTables`: the rows of the shared table; value ``v`` of a feature reads
  one row per probe (``rows_for``), so features and values that collide share a row, and
  every lookup of that row counts towards its frequency.
* :class:`MatryoshkaTables`: those of the layout it wraps.

Pruned and compact layouts output masked or trimmed rows, not the rows themselves, so the
penalty on their outputs would not be the paper's; they refuse.

Example::

    >>> from recsys_embed.features import FeatureSpec, Schema
    >>> from recsys_embed.tables.per_feature import PerFeatureTables
    >>> schema = Schema([FeatureSpec("user", embedding_dim=4), FeatureSpec("item", embedding_dim=4),
    ...                  FeatureSpec("hist", kind="sequence", table="item", max_len=3, embedding_dim=4)])
    >>> tables = PerFeatureTables(schema, {"user": 5, "item": 10})
    >>> kjt = KeyedJaggedTensor.from_lengths_sync(
    ...     ["user", "item", "hist"], torch.tensor([2, 3, 7, 8, 7, 9, 4]), torch.tensor([1, 1, 1, 1, 2, 1]))
    >>> {name: rows.squeeze(-1).tolist() for name, rows in tables.rows_read(kjt).items()}
    {'user': [2, 3], 'item': [12, 13], 'hist': [[12, 14, -1], [9, -1, -1]]}
    >>> frequencies = row_frequencies(tables, [kjt])
    >>> frequencies.shape, frequencies[12].item(), frequencies[2].item(), frequencies[0].item()
    (torch.Size([15]), 2, 1, 0)
    >>> [(vectors.shape, rows.tolist()) for vectors, rows in row_vectors(tables, kjt, tables(kjt))]
    [(torch.Size([7, 4]), [2, 3, 12, 13, 12, 14, 9])]
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.tables.base import Embeddings
from recsys_embed.tables.inputs import NO_ROW


def row_vectors(layout: nn.Module, kjt: KeyedJaggedTensor, embeddings: Embeddings) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The rows a batch read, as slices of the layout's output ``embeddings`` (so a loss on
    them reaches the rows through the kernel's backward and its fused optimizer): one
    ``(vectors [N, d], rows [N])`` pair per row width d, every lookup once (repeats included)."""
    groups: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for name, rows in layout.rows_read(kjt).items():
        output = embeddings.sequences[name] if name in embeddings.sequences else embeddings.pooled[name]
        width = output.shape[-1] // rows.shape[-1]
        flat_rows = rows.reshape(-1)
        read = (flat_rows != NO_ROW).nonzero().squeeze(1)  # index_select: far cheaper than a boolean mask
        group = groups.setdefault(width, ([], []))
        group[0].append(output.reshape(-1, width).index_select(0, read))
        group[1].append(flat_rows.index_select(0, read))
    return [(torch.cat(vectors), torch.cat(rows)) for vectors, rows in groups.values()]


def row_frequencies(layout: nn.Module, kjts: Iterable[KeyedJaggedTensor]) -> torch.Tensor:
    """``[layout.num_rows()]`` int64: how often the batches ``kjts`` (e.g. one pass over the
    training data) read each layout row, every lookup of every feature counted."""
    counts = torch.zeros(layout.num_rows(), dtype=torch.int64)
    for kjt in kjts:
        rows = torch.cat([r[r != NO_ROW].reshape(-1) for r in layout.rows_read(kjt).values()])
        counts += torch.bincount(rows.cpu(), minlength=counts.numel())
    return counts
