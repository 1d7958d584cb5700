"""Per-feature tables: one embedding table per table group, trained by fbgemm's fused kernel."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from itertools import accumulate
from typing import Any

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import FeatureSpec, IdStrategy, Schema
from recsys_embed.tables.accounting import FeatureAccount, expected_collision_rate, format_summary
from recsys_embed.tables.base import (
    FusedLayoutState,
    check_layout,
    Embeddings,
    EmbeddingShapes,
    FusedTables,
    TableOptimizer,
    empty_embeddings,
    unpack_output,
)
from recsys_embed.tables.compact import CompactTables
from recsys_embed.tables.contract import TableLayout, group_size
from recsys_embed.tables.registry import register_layout
from recsys_embed.tables.inputs import NO_ROW, BatchInputs, BatchMemo, batch_inputs

LAYOUT = "per_feature"


@register_layout(LAYOUT)
class PerFeatureTables(FusedLayoutState, TableLayout):
    """One table per table group of the schema; features of a group share its rows.

    Input: a ``KeyedJaggedTensor`` with (at least) the schema's sparse features as keys.
    Output: :class:`Embeddings`; categorical feature f gives ``pooled[f]`` of ``[B, D_f]``
    (the sum over its bag, which has one id for categorical features; an empty bag gives
    zeros), sequence feature s gives ``sequences[s]`` of ``[B, L_s, D_s]`` and ``masks[s]``
    of ``[B, L_s]``. Ids outside ``[0, rows)`` of their table raise ``IndexError``.

    Example::

        >>> schema = Schema([FeatureSpec("item_id", embedding_dim=4),
        ...                  FeatureSpec("hist", kind="sequence", table="item_id", max_len=3, embedding_dim=4)])
        >>> tables = PerFeatureTables(schema, {"item_id": 10})
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(
        ...     keys=["item_id", "hist"], values=torch.tensor([5, 7, 2, 3, 4]),
        ...     lengths=torch.tensor([1, 1, 3, 0]))
        >>> out = tables(kjt)
        >>> out.pooled["item_id"].shape, out.sequences["hist"].shape, out.masks["hist"].tolist()
        (torch.Size([2, 4]), torch.Size([2, 3, 4]), [[True, True, True], [False, False, False]])
        >>> tables.num_parameters()   # 10 rows x 4
        40
        >>> tables.memory_bytes()     # 160 B weights + 40 B rowwise Adagrad state + 72 B fbgemm placeholders
        272
        >>> pooled = PerFeatureTables(schema, {"item_id": 10}, pool_sequences=True)
        >>> pooled(kjt).pooled["hist"].shape, pooled.shapes().sequences    # the mean of each history
        (torch.Size([2, 4]), {})

    ``pool_sequences=True``: the kernel pools each sequence in one bag, and ``pooled[s]`` is
    its mean embedding ``[B, D_s]`` (zeros for an empty sequence; no positions, no mask): for
    models that only read a sequence's mean (AutoInt, the MLP baseline), whose inputs it leaves
    unchanged while the kernel writes and differentiates one column block per sequence instead
    of ``L_s``. DIN and BERT4Rec need the positions; :meth:`shapes` tells the models which.

    ``storage=False`` builds the input side only (id checks and slot maps:
    :meth:`kernel_inputs`, :meth:`shapes`) with its kernel on the meta device: no weight or
    optimizer state is allocated, and ``forward`` raises. ``recsys_embed.jobs.sharding`` shards
    such a layout.
    """

    def __init__(
        self,
        schema: Schema,
        num_embeddings: Mapping[str, int],
        optimizer: TableOptimizer | None = None,
        init_scale: float = 0.05,
        device: torch.device | str | None = None,
        storage: bool = True,
        pool_sequences: bool = False,
    ) -> None:
        super().__init__()
        self.pool_sequences = pool_sequences
        self.schema = schema
        self.features: list[FeatureSpec] = schema.sparse_features
        self.table_names = list(schema.tables)
        missing = [t for t in self.table_names if t not in num_embeddings]
        if missing:
            raise ValueError(f"num_embeddings has no row count for table(s) {missing}")
        self.rows = {t: int(num_embeddings[t]) for t in self.table_names}
        bad = {t: r for t, r in self.rows.items() if r < 1}
        if bad:
            raise ValueError(f"num_embeddings: every table needs >= 1 row, got {bad}")
        dims = {t: schema.tables[t][0].embedding_dim for t in self.table_names}
        self.dims = {f.name: f.embedding_dim for f in self.features}
        # the kernel packs tables of one dim side by side into one fbgemm table and reads their
        # slots together: tables and slots are grouped by dim, otherwise in schema order (with
        # one dim, the slots are the batch's keys in order); the output keeps schema order
        dim_rank = {d: i for i, d in enumerate(dict.fromkeys(dims.values()))}
        kernel_tables = sorted(self.table_names, key=lambda t: dim_rank[dims[t]])
        table_index = {t: i for i, t in enumerate(kernel_tables)}
        self.slot_order = sorted(self.features, key=lambda f: dim_rank[f.embedding_dim])
        slot_tables: list[int] = []
        for spec in self.slot_order:
            slot_tables += [table_index[spec.table]] * self._slots(spec)  # type: ignore[index]
        self.kernel = FusedTables(
            rows=[self.rows[t] for t in kernel_tables],
            dims=[dims[t] for t in kernel_tables],
            slot_tables=slot_tables,
            optimizer=optimizer or TableOptimizer(),
            init_scale=init_scale,
            device=device if storage else "meta",
            table_names=kernel_tables,
        )
        self._limits = {t: self.rows[t] for t in self.table_names}
        self._memo = BatchMemo()

    def _slots(self, spec: FeatureSpec) -> int:
        """Kernel slots (bags per sample) of a feature: a sequence has one per position unless pooled."""
        return spec.max_len if spec.is_sequence and not self.pool_sequences else 1  # type: ignore[return-value]

    def kernel_inputs(self, kjt: KeyedJaggedTensor) -> BatchInputs:
        """The batch's checked kernel inputs (table-relative ids, offsets, sequence masks), computed
        once per batch (:mod:`recsys_embed.tables.inputs`)."""
        return self._memo.get(kjt, lambda k: batch_inputs(k, self.slot_order, self._limits, pool_sequences=self.pool_sequences))

    def forward(self, kjt: KeyedJaggedTensor) -> Embeddings:
        if kjt.lengths().numel() == 0:
            return empty_embeddings(self.features, self.dims, kjt.values().device, self.pool_sequences)
        inputs = self.kernel_inputs(kjt)
        flat = self.kernel(inputs.indices, inputs.offsets, validated=True)
        return unpack_output(flat, self.slot_order, self.dims, inputs.masks, self.features, self.pool_sequences)

    def num_rows(self) -> int:
        """Layout rows: the table groups' rows one after another in schema order."""
        return sum(self.rows.values())

    def rows_read(self, kjt: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        """Feature -> the layout rows its output read (``[B, 1]``, sequences ``[B, L, 1]``; -1 none):
        row r of table group t is layout row ``r + `` the rows of the groups before t."""
        inputs = self.kernel_inputs(kjt)
        starts = dict(zip(self.table_names, accumulate(self.rows.values(), initial=0)))
        out = {}
        for spec in self.features:
            rows = inputs.slot_rows(spec.name)
            out[spec.name] = torch.where(rows == NO_ROW, rows, rows + starts[spec.table])  # type: ignore[index]
        return out

    def shapes(self, num_dense: int = 0) -> EmbeddingShapes:
        """The output shapes, for building a model on top of this layout."""
        positions = [f for f in self.features if f.is_sequence and not self.pool_sequences]
        return EmbeddingShapes(
            pooled={f.name: f.embedding_dim for f in self.features if f not in positions},
            sequences={f.name: (f.max_len, f.embedding_dim) for f in positions},  # type: ignore[misc]
            num_dense=num_dense,
        )

    def table_weights(self) -> dict[str, torch.Tensor]:
        """Table group -> ``[rows, dim]`` weight view, in schema order."""
        weights = dict(zip(self.kernel.table_names, self.kernel.weights()))
        return {t: weights[t] for t in self.table_names}

    def num_ids(self, group: str) -> int:
        return group_size(self.rows, group, LAYOUT)

    def table_vectors(self, group: str) -> torch.Tensor:
        """Every row of table group ``group`` as ``[rows, D]``; with gradients enabled, a tensor whose
        gradient the fused optimizer applies in backward (:meth:`FusedTables.table_weight`; e.g. a
        tied output layer over all items), else a detached copy."""
        group_size(self.rows, group, LAYOUT)
        return self.kernel.table_weight(self.kernel.table_names.index(group))

    def compact(self) -> CompactTables:
        """The plain lookup copy of the current rows (:meth:`CompactTables.copy_of`)."""
        return CompactTables.copy_of(self)

    def kernel_slots(self) -> tuple[list[FeatureSpec], dict[str, int]]:
        """Features in kernel slot order, one row read per id."""
        if self.pool_sequences:
            raise ValueError(
                "sharding: a PerFeatureTables with pool_sequences=True is not sharded (its sequences are "
                "one kernel bag each); build it with pool_sequences=False"
            )
        return list(self.slot_order), {f.name: 1 for f in self.slot_order}

    def num_parameters(self) -> int:
        return self.kernel.num_parameters()

    def memory_bytes(self) -> int:
        """Bytes the kernel allocated: weights plus fused optimizer state."""
        return self.kernel.memory_bytes()

    def summary(self, distinct_values: Mapping[str, int] | None = None) -> str:
        """One line per feature: table, rows, dim, bytes, and for hashed features
        (``ids="hashing"``) the expected collision rate given ``distinct_values[feature]``,
        the number of distinct raw values (from the fitted pipeline or the data)."""
        sizes = dict(zip(self.kernel.table_names, self.kernel.table_bytes()))
        distinct = distinct_values or {}
        accounts, seen = [], set()
        for spec in self.features:
            table = spec.table  # type: ignore[assignment]
            rate = None
            if spec.ids is IdStrategy.HASHING and spec.name in distinct:
                rate = expected_collision_rate(distinct[spec.name], spec.hash_buckets)
            accounts.append(FeatureAccount(
                spec.name, table, self.rows[table], spec.embedding_dim, LAYOUT,
                None if table in seen else sizes[table], rate,
            ))
            seen.add(table)
        return format_summary(accounts, self.num_parameters(), self.memory_bytes())

    def state_config(self) -> dict[str, Any]:
        """The JSON-ready config :meth:`from_config` and :meth:`from_state` rebuild this layout from (with the schema)."""
        return {
            "layout": LAYOUT,
            "num_embeddings": dict(self.rows),
            "optimizer": dataclasses.asdict(self.kernel.current_optimizer()),
            "pool_sequences": self.pool_sequences,
        }


    @classmethod
    def from_config(
        cls,
        schema: Schema,
        config: Mapping[str, Any],
        device: torch.device | str | None = None,
        storage: bool = True,
    ) -> PerFeatureTables:
        """A layout of the :meth:`state_config` ``config`` with fresh weights (or none: ``storage=False``)."""
        check_layout(config, LAYOUT)
        return cls(
            schema, config["num_embeddings"], TableOptimizer(**config["optimizer"]), device=device, storage=storage,
            pool_sequences=bool(config.get("pool_sequences", False)),
        )  # fmt: skip
