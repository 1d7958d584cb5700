"""Which table rows a batch reads, and how often a dataset reads each row: the ``n_j`` of DIN's
mini-batch aware L2 (Zhou et al. 2018, section 4.1, eq. 4-5).

Rows are numbered across a layout's tables ("layout rows"):

* :class:`PerFeatureTables`: table groups one after another in schema order; row ``r`` of
  table group ``t`` is ``offset_t + r`` with ``offset_t`` the rows of the groups before it.
  ``item_id`` and ``hist_item_id`` read the same rows.
* :class:`MultiplexedTables`: the rows of the shared table; value ``v`` of a feature reads
  one row per probe (``rows_for``), so features and values that collide share a row, and
  every lookup of that row counts towards its frequency.
* :class:`MatryoshkaTables`: those of the layout it wraps.

Pruned and compact layouts output masked or trimmed rows, not the rows themselves, so the
penalty on their outputs would not be the paper's; they are refused.

Example::

    >>> from recsys_embed.features import FeatureSpec, Schema
    >>> schema = Schema([FeatureSpec("user", embedding_dim=4), FeatureSpec("item", embedding_dim=4),
    ...                  FeatureSpec("hist", kind="sequence", table="item", max_len=3, embedding_dim=4)])
    >>> tables = PerFeatureTables(schema, {"user": 5, "item": 10})
    >>> kjt = KeyedJaggedTensor.from_lengths_sync(
    ...     ["user", "item", "hist"], torch.tensor([2, 3, 7, 8, 7, 9, 4]), torch.tensor([1, 1, 1, 1, 2, 1]))
    >>> {name: rows.squeeze(-1).tolist() for name, rows in lookup_rows(tables, kjt).items()}
    {'user': [2, 3], 'item': [12, 13], 'hist': [[12, 14, -1], [9, -1, -1]]}
    >>> frequencies = row_frequencies(tables, [kjt])
    >>> frequencies.shape, frequencies[12].item(), frequencies[2].item(), frequencies[0].item()
    (torch.Size([15]), 2, 1, 0)
    >>> [(vectors.shape, rows.tolist()) for vectors, rows in row_vectors(tables, kjt, tables(kjt))]
    [(torch.Size([7, 4]), [2, 3, 12, 13, 12, 14, 9])]
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import accumulate

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.tables.base import Embeddings, check_ids, sequence_grid
from recsys_embed.tables.matryoshka import MatryoshkaTables
from recsys_embed.tables.multiplexed import MultiplexedTables
from recsys_embed.tables.per_feature import PerFeatureTables

NO_ROW = -1  # an empty bag or a sequence's padding position reads no row


def _row_layout(layout: nn.Module) -> PerFeatureTables | MultiplexedTables:
    """The layout whose outputs are its rows (through Matryoshka wrappers)."""
    while isinstance(layout, MatryoshkaTables):
        layout = layout.base
    if not isinstance(layout, (PerFeatureTables, MultiplexedTables)):
        raise ValueError(
            f"mini-batch aware L2 needs a layout whose outputs are its table rows: PerFeatureTables or "
            f"MultiplexedTables (or MatryoshkaTables over one), not {type(layout).__name__}"
        )
    return layout


def num_layout_rows(layout: nn.Module) -> int:
    """How many layout rows ``layout`` has (the length of :func:`row_frequencies`)."""
    layout = _row_layout(layout)
    if isinstance(layout, MultiplexedTables):
        return layout.config.rows
    return sum(layout.rows.values())


def lookup_rows(layout: nn.Module, kjt: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
    """Feature -> the layout rows its output reads, aligned with the layout's :class:`Embeddings`:
    ``[B, k]`` for a pooled feature, ``[B, L, k]`` for a sequence (k rows side by side in the
    output: 1 for per-feature tables, the probes for multiplexed ones); ``-1`` where no row is
    read (an empty bag, a padding position). A categorical bag may hold at most one id."""
    layout = _row_layout(layout)
    by_key = kjt.to_dict()
    starts: dict[str, int] = {}  # per-feature tables: the first layout row of each table group
    if isinstance(layout, PerFeatureTables):
        starts = dict(zip(layout.table_names, accumulate((layout.rows[t] for t in layout.table_names), initial=0)))
    out: dict[str, torch.Tensor] = {}
    for spec in layout.features:
        if spec.name not in by_key:
            raise KeyError(f"batch has no sparse feature {spec.name!r}; it has {kjt.keys()}")
        jt = by_key[spec.name]
        values, lengths = jt.values().to(torch.int64), jt.lengths().to(torch.int64)
        table: str = spec.table  # type: ignore[assignment]
        if isinstance(layout, PerFeatureTables):
            check_ids(spec.name, values, layout.rows[table])
        probes = layout.probes[table] if isinstance(layout, MultiplexedTables) else 1
        if spec.is_sequence:
            grid, present = sequence_grid(values, lengths, spec.max_len)  # [L, B]
            rows = _rows_of(layout, spec.name, grid.reshape(-1), starts.get(table, 0)).reshape(*grid.shape, probes)
            out[spec.name] = rows.masked_fill(~present.unsqueeze(-1), NO_ROW).transpose(0, 1).contiguous()
            continue
        if lengths.numel() and int(lengths.max()) > 1:
            raise ValueError(
                f"mini-batch aware L2: categorical feature {spec.name!r} has bags of up to {int(lengths.max())} ids; "
                "its output is then a sum of rows, not one row (expected at most one id per bag)"
            )
        rows = torch.full((lengths.numel(), probes), NO_ROW, dtype=torch.int64, device=values.device)
        rows[lengths == 1] = _rows_of(layout, spec.name, values, starts.get(table, 0))
        out[spec.name] = rows
    return out


def _rows_of(layout: PerFeatureTables | MultiplexedTables, feature: str, ids: torch.Tensor, start: int) -> torch.Tensor:
    """Ids ``[N]`` of ``feature`` -> the layout rows ``[N, k]`` they read (``start``: the first
    layout row of the feature's per-feature table)."""
    if isinstance(layout, MultiplexedTables):
        return layout.rows_for(feature, ids)
    return (ids + start).unsqueeze(1)


def row_vectors(layout: nn.Module, kjt: KeyedJaggedTensor, embeddings: Embeddings) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The rows a batch read, as slices of the layout's output ``embeddings`` (so a loss on
    them reaches the rows through the kernel's backward and its fused optimizer): one
    ``(vectors [N, d], rows [N])`` pair per row width d, every lookup once (repeats included)."""
    groups: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for name, rows in lookup_rows(layout, kjt).items():
        output = embeddings.sequences[name] if name in embeddings.sequences else embeddings.pooled[name]
        width = output.shape[-1] // rows.shape[-1]
        flat_rows = rows.reshape(-1)
        read = (flat_rows != NO_ROW).nonzero().squeeze(1)  # index_select: far cheaper than a boolean mask
        group = groups.setdefault(width, ([], []))
        group[0].append(output.reshape(-1, width).index_select(0, read))
        group[1].append(flat_rows.index_select(0, read))
    return [(torch.cat(vectors), torch.cat(rows)) for vectors, rows in groups.values()]


def row_frequencies(layout: nn.Module, kjts: Iterable[KeyedJaggedTensor]) -> torch.Tensor:
    """``[num_layout_rows(layout)]`` int64: how often the batches ``kjts`` (e.g. one pass over the
    training data) read each layout row, every lookup of every feature counted."""
    counts = torch.zeros(num_layout_rows(layout), dtype=torch.int64)
    for kjt in kjts:
        rows = torch.cat([r[r != NO_ROW] for r in lookup_rows(layout, kjt).values()])
        counts += torch.bincount(rows.cpu(), minlength=counts.numel())
    return counts
