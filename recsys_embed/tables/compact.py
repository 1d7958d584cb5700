"""Compact serving tables: plain ``nn.Module`` lookups of exported (pruned and/or truncated) weights.

Table t stores ``weight[t]`` of ``[K_t, d_t]`` and optionally ``kept_ids[t]``, the sorted
original ids of its K_t stored rows. Feature f of table t looks its id up: a stored id gives
its row, an id that is not stored (a pruned row) gives a zero vector, exactly what the masked
training table outputs for it. Outputs are zero padded from d_t to ``out_dims[t]`` columns, so a
model trained on the full width runs unchanged on the compact table.

Only what is stored is counted: ``memory_bytes()`` is the weights plus the kept-id lists
(4 bytes per kept row while ids fit in int32).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables.base import EmbeddingShapes, Embeddings, check_layout
from recsys_embed.tables.contract import TableLayout, group_size
from recsys_embed.tables.inputs import BatchMemo, batch_inputs
from recsys_embed.tables.registry import register_layout


@register_layout("compact")
class CompactTables(TableLayout):
    """Serving tables holding only kept rows and kept dims.

    Args:
        schema: the schema the tables were trained for (its sparse features are the inputs).
        num_embeddings: table -> row count of the original table (the valid id range).
        weights: table -> ``[K_t, d_t]`` stored rows.
        kept_ids: table -> sorted ``[K_t]`` original ids of the stored rows; a table absent
            here stores every row (``K_t`` must equal its row count).
        out_dims: table -> output width (>= d_t, zero padded); defaults to d_t.

    Output: :class:`Embeddings` with ``pooled[f]`` of ``[B, out_dims[t]]`` and
    ``sequences[f]`` of ``[B, L, out_dims[t]]`` plus ``masks[f]`` of ``[B, L]``.

    Example::

        >>> schema = Schema([FeatureSpec("item_id", embedding_dim=4)])
        >>> tables = CompactTables(schema, {"item_id": 10}, {"item_id": torch.ones(2, 3)},
        ...                        kept_ids={"item_id": torch.tensor([2, 7], dtype=torch.int32)},
        ...                        out_dims={"item_id": 4})
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(["item_id"], torch.tensor([7, 5]), torch.tensor([1, 1]))
        >>> tables(kjt).pooled["item_id"].tolist()
        [[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """

    def __init__(
        self,
        schema: Schema,
        num_embeddings: Mapping[str, int],
        weights: Mapping[str, torch.Tensor],
        kept_ids: Mapping[str, torch.Tensor] | None = None,
        out_dims: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.schema = schema
        self.features: list[FeatureSpec] = schema.sparse_features
        self.table_names = list(schema.tables)
        kept_ids = kept_ids or {}
        missing = [t for t in self.table_names if t not in weights or t not in num_embeddings]
        if missing:
            raise ValueError(f"compact tables: no weights or row count for table(s) {missing}")
        self.rows = {t: int(num_embeddings[t]) for t in self.table_names}
        self.weights = nn.ParameterList(nn.Parameter(weights[t].detach().clone()) for t in self.table_names)
        self.out_dims = {t: int((out_dims or {}).get(t, weights[t].shape[1])) for t in self.table_names}
        self.stores_all: list[bool] = []
        for i, name in enumerate(self.table_names):
            weight, kept = self.weights[i], kept_ids.get(name)
            if weight.dim() != 2 or self.out_dims[name] < weight.shape[1]:
                raise ValueError(
                    f"compact table {name!r}: weight must be [rows, d] with d <= out dim {self.out_dims[name]}, "
                    f"got {tuple(weight.shape)}"
                )
            if kept is None and weight.shape[0] != self.rows[name]:
                raise ValueError(f"compact table {name!r}: {weight.shape[0]} rows stored but no kept_ids for {self.rows[name]} ids")
            if kept is not None and (kept.shape != (weight.shape[0],) or (kept.numel() > 1 and bool((kept[1:] <= kept[:-1]).any()))):
                raise ValueError(f"compact table {name!r}: kept_ids must be {weight.shape[0]} strictly increasing ids")
            self.stores_all.append(kept is None)
            self.register_buffer(f"kept_ids_{i}", None if kept is None else kept.detach().clone().to(weight.device))
        self._memo = BatchMemo()

    def _lookup(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        """Rows for ``ids`` (any shape, -1 = empty) of table ``index``: ``[*ids.shape, d]``, zeros where not stored."""
        weight = self.weights[index]
        kept: torch.Tensor | None = getattr(self, f"kept_ids_{index}")
        if kept is None:
            found, pos = ids >= 0, ids.clamp(min=0)
        elif kept.numel() == 0:
            return weight.new_zeros(*ids.shape, weight.shape[1])
        else:
            pos = torch.searchsorted(kept, ids.to(kept.dtype)).clamp(max=kept.numel() - 1)
            found = (ids >= 0) & (kept[pos] == ids)
        return F.embedding(pos, weight) * found.unsqueeze(-1).to(weight.dtype)

    def forward(self, kjt: KeyedJaggedTensor) -> Embeddings:
        """Each output slot looks up the id it holds (:meth:`BatchInputs.slot_rows`; a categorical
        bag holds at most one id, else ``ValueError``)."""
        inputs = self._memo.get(kjt, lambda k: batch_inputs(k, self.features, self.rows))
        out = Embeddings()
        for spec in self.features:
            index = self.table_names.index(spec.table)  # type: ignore[arg-type]
            ids = inputs.slot_rows(spec.name).squeeze(-1)  # [B] or [B, L], -1 where empty
            rows = self._lookup(index, ids)
            rows = F.pad(rows, (0, self.out_dims[spec.table] - rows.shape[-1]))  # type: ignore[index]
            if spec.is_sequence:
                out.sequences[spec.name], out.masks[spec.name] = rows, ids >= 0
            else:
                out.pooled[spec.name] = rows
        return out

    def prefix(self, dim: int, keep_width: bool = False) -> CompactTables:
        """The first ``dim`` output columns only: weights truncated to ``min(dim, d_t)`` columns;
        outputs ``dim`` wide, or as wide as now with ``keep_width`` (zero tail)."""
        narrowest = min(self.out_dims.values())
        if not 1 <= dim <= narrowest:
            raise ValueError(f"prefix dim must lie in [1, {narrowest}] (the narrowest table output), got {dim}")
        return CompactTables(
            self.schema,
            self.rows,
            {t: w[:, :dim] for t, w in zip(self.table_names, self.weights)},
            self._kept_ids(),
            self.out_dims if keep_width else {t: dim for t in self.table_names},
        )

    def num_ids(self, group: str) -> int:
        return group_size(self.rows, group, "compact")

    def compact(self) -> CompactTables:
        """Itself: it is the plain lookup already."""
        return self

    @classmethod
    def copy_of(cls, layout: TableLayout) -> CompactTables:
        """The plain lookup copy of ``layout``'s current (eval-mode) outputs: its
        :meth:`~TableLayout.table_vectors` of every table group, stored in full."""
        groups = list(dict.fromkeys(f.table for f in layout.features))
        with torch.no_grad():
            vectors = {g: layout.table_vectors(g) for g in groups}
        return cls(Schema(features=list(layout.features)), {g: layout.num_ids(g) for g in groups}, vectors)  # type: ignore[arg-type]

    def _kept_ids(self) -> dict[str, torch.Tensor]:
        return {t: getattr(self, f"kept_ids_{i}") for i, t in enumerate(self.table_names) if not self.stores_all[i]}

    def shapes(self, num_dense: int = 0) -> EmbeddingShapes:
        dims = {f.name: self.out_dims[f.table] for f in self.features}  # type: ignore[index]
        return EmbeddingShapes(
            pooled={f.name: dims[f.name] for f in self.features if not f.is_sequence},
            sequences={f.name: (f.max_len, dims[f.name]) for f in self.features if f.is_sequence},
            num_dense=num_dense,
        )

    def num_parameters(self) -> int:
        return sum(w.numel() for w in self.weights)

    def memory_bytes(self) -> int:
        """Stored weights plus kept-id lists."""
        tensors = list(self.weights) + list(self._kept_ids().values())
        return sum(t.numel() * t.element_size() for t in tensors)

    def summary(self) -> str:
        lines = [f"{'table':<20} {'ids':>10} {'stored':>10} {'dim':>5} {'out':>5} {'bytes':>12}"]
        kept = self._kept_ids()
        for name, weight in zip(self.table_names, self.weights):
            size = weight.numel() * weight.element_size() + (kept[name].numel() * kept[name].element_size() if name in kept else 0)
            lines.append(f"{name:<20} {self.rows[name]:>10} {weight.shape[0]:>10} {weight.shape[1]:>5} {self.out_dims[name]:>5} {size:>12}")
        lines.append(f"total parameters {self.num_parameters():,}  memory {self.memory_bytes():,} bytes")
        return "\n".join(lines)

    def export_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors ``weight/<table>`` and ``kept_ids/<table>`` and a JSON-ready config."""
        tensors = {f"weight/{t}": w.detach().cpu().contiguous() for t, w in zip(self.table_names, self.weights)}
        tensors.update({f"kept_ids/{t}": k.detach().cpu().contiguous() for t, k in self._kept_ids().items()})
        return tensors, {"layout": "compact", "num_embeddings": dict(self.rows), "out_dims": dict(self.out_dims)}

    @classmethod
    def from_state(
        cls,
        schema: Schema,
        tensors: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        device: torch.device | str | None = None,
    ) -> CompactTables:
        check_layout(config, "compact")
        missing = [f"weight/{t}" for t in schema.tables if f"weight/{t}" not in tensors]
        if missing:
            raise ValueError(f"compact state has no tensor(s) {missing}")
        device = torch.device(device or "cpu")
        return cls(
            schema,
            config["num_embeddings"],
            {t: tensors[f"weight/{t}"].to(device) for t in schema.tables},
            {t: tensors[f"kept_ids/{t}"].to(device) for t in schema.tables if f"kept_ids/{t}" in tensors},
            config["out_dims"],
        )
