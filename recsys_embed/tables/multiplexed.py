"""Multiplexed tables: one shared table for many features (Feature Multiplexing / Unified
Embedding, Coleman et al. 2023).

One table of ``M`` rows and chunk width ``d_c`` serves a set of features. Value ``v`` of a
feature in table group ``t``, probe ``j``, reads row

    row_j(v) = hash(v; seed(t, j)) mod M,        j = 0 .. k_t - 1

(``recsys_embed.hashing.bucket_torch``, stable across versions), and the feature's vector is
its ``k_t`` chunks concatenated, dim ``k_t * d_c``. Seeds are per table group, so features of
one group (``item_id`` and ``hist_item_id``) read the same rows. Every id is hashed,
``0`` (missing) and ``1`` (out-of-vocabulary) included, so no row is reserved; negative ids
raise ``IndexError``, and so do ids at or above a table group's vocabulary size when
``vocab_sizes`` is given (the layout itself can read any id without going out of bounds).

All (feature, probe[, sequence position]) slots read table 0 of one fbgemm TBE with a fused
optimizer: one kernel call per batch, never a shared table in an unsharded
``EmbeddingBagCollection`` (which is catastrophically slow on CPU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.hashing import bucket_torch, seed_of
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
from recsys_embed.tables.inputs import BatchInputs, BatchMemo, batch_inputs

LAYOUT = "multiplexed"
SHARED = "shared"


@dataclass
class MultiplexedConfig:
    """The shared table's size and how features read it.

    The defaults, 2 probes of 8 (a feature's vector of 16), were chosen on validation AUC of the
    synthetic CTR data (``benchmarks/quality.py --parts 2 --budgets 10 100 --probes 1 2 4``, two
    data seeds, the embedding dim kept at 16): at 1/10 of the exact tables' memory the probe count
    made no difference (1, 2, 4 probes within 0.0005), at 1/100 two probes gained 0.004 over one
    and four 0.010, at 1.2x and 1.7x the training CPU time of one probe.

    Args:
        rows: ``M``, rows of the shared table.
        chunk_dim: ``d_c``, width of one row (a multiple of 4).
        probes: ``k``, rows read (and concatenated) per value, for every table group ...
        table_probes: ... except the table groups named here (table group -> k).
        features: the sparse features this layout embeds; ``None`` means all of them.
        salt: mixed into every hash seed; two layouts with different salts hash independently.
        init_scale: weights start uniform in ``[-init_scale, init_scale]``.
    """

    rows: int
    chunk_dim: int = 8
    probes: int = 2
    table_probes: dict[str, int] = field(default_factory=dict)
    features: list[str] | None = None
    salt: str = LAYOUT
    init_scale: float = 0.05

    def __post_init__(self) -> None:
        if self.rows < 1 or self.chunk_dim < 1:
            raise ValueError(f"multiplexed: rows and chunk_dim must be >= 1, got rows={self.rows} chunk_dim={self.chunk_dim}")
        if self.chunk_dim % 4:
            raise ValueError(f"multiplexed: chunk_dim must be a multiple of 4 (fbgemm's kernel needs it), got {self.chunk_dim}")
        bad = {t: k for t, k in {"probes": self.probes, **self.table_probes}.items() if k < 1}
        if bad:
            raise ValueError(f"multiplexed: probes must be >= 1, got {bad}")

    @classmethod
    def from_budget(cls, total_parameters: int, chunk_dim: int = 8, probes: int = 2, **options: Any) -> MultiplexedConfig:
        """The config whose shared table holds ``total_parameters`` weights:
        ``rows = total_parameters // chunk_dim`` (optimizer state comes on top).

        >>> MultiplexedConfig.from_budget(26 * 100_000 * 16).rows  # two probes of 8
        5200000
        """
        if total_parameters < chunk_dim:
            raise ValueError(f"multiplexed: a budget of {total_parameters} parameters is less than one row of {chunk_dim}")
        return cls(rows=total_parameters // chunk_dim, chunk_dim=chunk_dim, probes=probes, **options)


def _signed_seeds(seeds: list[int]) -> torch.Tensor:
    """64-bit seeds as the int64 tensor holding the same bits."""
    return torch.from_numpy(np.array(seeds, dtype=np.uint64).view(np.int64))


@register_layout(LAYOUT)
class MultiplexedTables(FusedLayoutState, TableLayout):
    """One shared ``[M, d_c]`` table read by every feature through ``k_t`` hashed probes.

    Input: a ``KeyedJaggedTensor`` with (at least) this layout's features as keys.
    Output: :class:`Embeddings` as :class:`PerFeatureTables` gives it, with dim
    ``D_f = k_t * d_c``: ``pooled[f]`` ``[B, D_f]`` (sum over the bag; an empty bag gives
    zeros), ``sequences[s]`` ``[B, L_s, D_s]`` and ``masks[s]`` ``[B, L_s]``.

    Example::

        >>> schema = Schema([FeatureSpec("user_id"), FeatureSpec("item_id"),
        ...                  FeatureSpec("hist", kind="sequence", table="item_id", max_len=3)])
        >>> config = MultiplexedConfig(rows=1000, chunk_dim=8, probes=1, table_probes={"item_id": 2})
        >>> tables = MultiplexedTables(schema, config)
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(
        ...     keys=["user_id", "item_id", "hist"], values=torch.tensor([1, 2, 5, 7, 7, 9]),
        ...     lengths=torch.tensor([1, 1, 1, 1, 2, 0]))
        >>> out = tables(kjt)
        >>> out.pooled["user_id"].shape, out.pooled["item_id"].shape, out.sequences["hist"].shape
        (torch.Size([2, 8]), torch.Size([2, 16]), torch.Size([2, 3, 16]))
        >>> torch.equal(out.sequences["hist"][0, 0], out.pooled["item_id"][1])   # item 7, shared rows
        True
        >>> tables.num_parameters()
        8000

    ``storage=False`` builds the input side only (hashing, id checks, slot maps:
    :meth:`kernel_inputs`, :meth:`rows_for`, :meth:`shapes`) with its kernel on the meta
    device: no weight or optimizer state is allocated, and ``forward`` raises.
    ``recsys_embed.jobs.sharding`` shards such a layout.
    """

    def __init__(
        self,
        schema: Schema,
        config: MultiplexedConfig,
        optimizer: TableOptimizer | None = None,
        device: torch.device | str | None = None,
        vocab_sizes: Mapping[str, int] | None = None,
        storage: bool = True,
    ) -> None:
        super().__init__()
        self.schema = schema
        self.config = config
        sparse = {f.name: f for f in schema.sparse_features}
        names = config.features if config.features is not None else list(sparse)
        unknown = [n for n in names if n not in sparse]
        if unknown:
            raise ValueError(f"multiplexed: features {unknown} are not sparse features of the schema; it has {list(sparse)}")
        if not names:
            raise ValueError("multiplexed: no feature to embed")
        self.features: list[FeatureSpec] = [sparse[n] for n in names]
        tables = list(dict.fromkeys(f.table for f in self.features))
        stray = sorted(set(config.table_probes) - set(tables))
        if stray:
            raise ValueError(
                f"multiplexed: table_probes names {stray}, which are not table groups of the embedded features {tables}"
            )
        self.probes: dict[str, int] = {t: config.table_probes.get(t, config.probes) for t in tables}  # type: ignore[misc]
        self.vocab_sizes = {t: int(n) for t, n in (vocab_sizes or {}).items() if t in self.probes}
        self.dims = {f.name: self.probes[f.table] * config.chunk_dim for f in self.features}  # type: ignore[index]
        self.seeds: dict[str, list[int]] = {
            t: [seed_of(f"{config.salt}/{t}/{j}") for j in range(k)] for t, k in self.probes.items()
        }
        probes_of = [self.probes[f.table] for f in self.features]  # type: ignore[index]
        self.kernel = FusedTables(
            rows=[config.rows],
            dims=[config.chunk_dim],
            slot_tables=[0] * sum(k * (f.max_len if f.is_sequence else 1) for f, k in zip(self.features, probes_of)),
            optimizer=optimizer or TableOptimizer(),
            init_scale=config.init_scale,
            device=device if storage else "meta",
            table_names=[SHARED],
        )
        self._seed_tensors = {t: _signed_seeds(s).to(device or "cpu") for t, s in self.seeds.items()}
        self._limits = {t: self.vocab_sizes.get(t) for t in self.probes}
        self._memo = BatchMemo()

    def rows_for(self, feature: str, ids: torch.Tensor) -> torch.Tensor:
        """The shared-table rows ``[N, k]`` that ids ``[N]`` of ``feature`` read, one column per probe."""
        spec = next((f for f in self.features if f.name == feature), None)
        if spec is None:
            raise KeyError(f"multiplexed: no feature {feature!r}; it embeds {[f.name for f in self.features]}")
        seeds = self.seeds[spec.table]  # type: ignore[index]
        return torch.stack([bucket_torch(ids, seed, self.config.rows) for seed in seeds], dim=1)

    def kernel_inputs(self, kjt: KeyedJaggedTensor) -> BatchInputs:
        """The batch's checked kernel inputs (hashed shared-table rows, offsets, sequence masks),
        computed once per batch (:mod:`recsys_embed.tables.inputs`)."""
        return self._memo.get(kjt, lambda k: batch_inputs(k, self.features, self._limits, self._seed_tensors, self.config.rows))

    def forward(self, kjt: KeyedJaggedTensor) -> Embeddings:
        if kjt.lengths().numel() == 0:
            return empty_embeddings(self.features, self.dims, kjt.values().device)
        inputs = self.kernel_inputs(kjt)
        flat = self.kernel(inputs.indices, inputs.offsets, validated=True)  # hashed rows lie in [0, M) by construction
        return unpack_output(flat, self.features, self.dims, inputs.masks, self.features)

    def num_rows(self) -> int:
        """Layout rows: the rows of the shared table."""
        return self.config.rows

    def rows_read(self, kjt: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        """Feature -> the shared rows its output read, ``[B, k]`` (sequences ``[B, L, k]``, k probes
        side by side as in the output; -1 none), the kernel's own hashed rows."""
        inputs = self.kernel_inputs(kjt)
        return {spec.name: inputs.slot_rows(spec.name) for spec in self.features}

    def shapes(self, num_dense: int = 0) -> EmbeddingShapes:
        """The output shapes, for building a model on top of this layout."""
        return EmbeddingShapes(
            pooled={f.name: self.dims[f.name] for f in self.features if not f.is_sequence},
            sequences={f.name: (f.max_len, self.dims[f.name]) for f in self.features if f.is_sequence},
            num_dense=num_dense,
        )

    def table_weights(self) -> dict[str, torch.Tensor]:
        """``{"shared": [M, d_c]}`` weight view."""
        return {SHARED: self.kernel.weights()[0]}

    def num_ids(self, group: str) -> int:
        """From ``vocab_sizes`` (the layout reads any id; without them the range is unknown)."""
        group_size(self.probes, group, LAYOUT)
        if group not in self.vocab_sizes:
            raise ValueError(f"multiplexed: the id range of table group {group!r} is unknown; build the layout with vocab_sizes")
        return self.vocab_sizes[group]

    def table_vectors(self, group: str) -> torch.Tensor:
        """The vector of every id ``0 .. vocab_sizes[group] - 1`` of table group ``group``,
        ``[V, k_t * d_c]`` (its probes' rows concatenated); with gradients enabled, the fused
        optimizer applies their gradient in backward (:meth:`FusedTables.table_weight`; e.g. a
        tied output layer over all items), else a detached copy."""
        ids = torch.arange(self.num_ids(group), device=self.kernel.weights()[0].device)
        feature = next(f.name for f in self.features if f.table == group)
        rows = self.rows_for(feature, ids)  # [V, k]
        return self.kernel.table_weight(0)[rows.reshape(-1)].view(len(ids), -1)

    def compact(self) -> CompactTables:
        """The plain lookup copy of the current rows (:meth:`CompactTables.copy_of`)."""
        return CompactTables.copy_of(self)

    def kernel_slots(self) -> tuple[list[FeatureSpec], dict[str, int]]:
        """Features in kernel slot order, ``k_t`` probes (rows read) per id."""
        return list(self.features), {f.name: self.probes[f.table] for f in self.features}  # type: ignore[index]

    def num_parameters(self) -> int:
        return self.kernel.num_parameters()

    def memory_bytes(self) -> int:
        """Bytes the kernel allocated: weights plus fused optimizer state."""
        return self.kernel.memory_bytes()

    def collision_rate(self) -> float | None:
        """Expected fraction of (value, probe) pairs sharing their row with another pair, given
        ``vocab_sizes`` of every table group (``None`` if one is unknown)."""
        if set(self.vocab_sizes) != set(self.probes):
            return None
        return expected_collision_rate(sum(self.vocab_sizes[t] * k for t, k in self.probes.items()), self.config.rows)

    def summary(self) -> str:
        """One line per feature: rows and dim it reads, the shared table's bytes (once), and
        the expected collision rate of the shared table."""
        rate, size = self.collision_rate(), self.kernel.table_bytes()[0]
        accounts = [
            FeatureAccount(
                f.name, f.table, self.config.rows, self.dims[f.name], LAYOUT, size if i == 0 else None, rate  # type: ignore[arg-type]
            )
            for i, f in enumerate(self.features)
        ]
        return format_summary(accounts, self.num_parameters(), self.memory_bytes())

    def state_config(self) -> dict[str, Any]:
        """The JSON-ready config :meth:`from_config` and :meth:`from_state` rebuild this layout from (with the schema)."""
        return {
            "layout": LAYOUT,
            "config": dataclasses.asdict(self.config),
            "optimizer": dataclasses.asdict(self.kernel.current_optimizer()),
            "vocab_sizes": dict(self.vocab_sizes),
        }


    @classmethod
    def from_config(
        cls,
        schema: Schema,
        config: Mapping[str, Any],
        device: torch.device | str | None = None,
        storage: bool = True,
    ) -> MultiplexedTables:
        """A layout of the :meth:`state_config` ``config`` with fresh weights (or none: ``storage=False``)."""
        check_layout(config, LAYOUT)
        return cls(
            schema,
            MultiplexedConfig(**config["config"]),
            TableOptimizer(**config["optimizer"]),
            device=device,
            vocab_sizes=config.get("vocab_sizes"),
            storage=storage,
        )
