"""Compressed tables: one compression method per table group behind the table-layout contract.

Every table group ``t`` (``n_t`` ids, dim ``D_t``) is stored by a
:class:`~recsys_embed.compression.method.CompressionMethod`; groups without one keep their exact
table (method ``exact``). The tables of all row methods (exact ones included) live in ONE
fused fbgemm kernel (:class:`~recsys_embed.tables.base.FusedTables`, packed by dim, trained by
its fused optimizer); computed methods are ordinary modules the dense optimizer trains.

Forward, for a batch ``kjt``: each output slot's id (``-1``: empty bag or padding;
:meth:`~recsys_embed.tables.inputs.BatchInputs.slot_rows`) goes to its group's method; a row
method's ``k`` kernel rows are read in one kernel call for all groups (``P`` slots of ``B`` bags
per feature: ``P = 1`` categorical, ``L`` sequence) and a computed method looks its ids up. A
method whose combine is the sum of its reads (:meth:`~CompressionMethod.pools_reads`: double
hashing ``sum``, QR ``add``, every one-read method) has ONE slot block whose bags hold the ``k``
rows of each id, summed by the kernel (no combine; a read of ``-1`` leaves a smaller bag, an
empty slot an empty bag). The others have a slot block per read and are combined: the features
of methods with one :meth:`~CompressionMethod.combine_key` (a unit) in one call over all their
slots (with the slots' ids and the method of each run of positions), their blocks ordered per
read so that each read is one ``[B, positions, d]`` view of the kernel's output. Categorical feature f gives ``pooled[f]`` ``[B, D]``,
sequence s gives ``sequences[s]`` ``[B, L, D]`` and ``masks[s]``; empty slots are zeros.
Categorical bags hold at most one id (per-id methods such as QR's product do not commute with
pooling).

Post-training quantization (:func:`recsys_embed.compression.quantized.quantize`) takes it when
every group's method keeps rows: the kernel's rows are quantized, the methods (and their own
tensors, e.g. mixed_dims' projections, in fp32) serve as trained; a computed method is refused.

Run configs name it as a per-feature layout with a ``compression`` key
(``layout: {name: per_feature, compression: {item_id: {method: qr, budget: 0.1}}}``);
artifacts name it ``compressed``.

Example::

    >>> from recsys_embed.features import FeatureSpec, Schema
    >>> schema = Schema([FeatureSpec("user_id", embedding_dim=8), FeatureSpec("item_id", embedding_dim=8),
    ...                  FeatureSpec("hist", kind="sequence", table="item_id", max_len=3, embedding_dim=8)])
    >>> tables = CompressedTables.from_options(schema, {"user_id": 100, "item_id": 1000},
    ...                                        {"item_id": {"method": "qr", "budget": 0.1}})
    >>> kjt = KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id", "hist"],
    ...     torch.tensor([3, 4, 10, 11, 12, 13]), torch.tensor([1, 1, 1, 1, 2, 0]))
    >>> out = tables(kjt)
    >>> out.pooled["item_id"].shape, out.sequences["hist"].shape, out.masks["hist"].tolist()
    (torch.Size([2, 8]), torch.Size([2, 3, 8]), [[True, True, False], [False, False, False]])
    >>> [(g, m.method_name) for g, m in tables.methods.items()]
    [('user_id', 'exact'), ('item_id', 'qr')]
    >>> tables.num_parameters() <= 100 * 8 + 1000 * 8 // 10
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.compression.method import CompressionMethod, budget_parameters
from recsys_embed.compression.checks import build_method, check_compression, check_groups, check_method
from recsys_embed.compression.registry import PluginError, method_class, provider
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables.base import (
    Embeddings,
    EmbeddingShapes,
    FusedTables,
    TableOptimizer,
    check_layout,
    empty_embeddings,
    split_columns,
)
from recsys_embed.tables.compact import CompactTables
from recsys_embed.tables.contract import TableLayout, group_size
from recsys_embed.tables.inputs import BatchInputs, BatchMemo, batch_inputs
from recsys_embed.tables.jagged import offsets_of
from recsys_embed.tables.registry import register_layout

LAYOUT = "compressed"
EXACT = "exact"


@dataclasses.dataclass(frozen=True)
class _Block:
    """``slots`` kernel slots (one per position) of feature ``feature`` for the reads ``parts`` of
    its method, from kernel table ``table``; output columns ``slots * dim``. One read: a one-row
    bag per slot. Several (a method that :meth:`~CompressionMethod.pools_reads`): one bag of
    ``len(parts)`` rows per slot, summed by the kernel. ``starts``: the first row of each read's
    table in the kernel's packed physical table (set once the kernel is built)."""

    feature: str
    parts: tuple[int, ...]
    table: int
    slots: int
    dim: int
    starts: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Unit:
    """Features whose vectors come out of the kernel together: one pooled feature (the kernel
    sums its reads), or the features of methods that combine alike
    (:meth:`~CompressionMethod.combine_key`; one :meth:`~CompressionMethod.combine` call over
    all their slots), or one feature whose method combines on its own (``batched=False``)."""

    features: tuple[str, ...]
    pooled: bool
    batched: bool


@dataclasses.dataclass(frozen=True)
class _Segment:
    """Consecutive kernel output columns ``[B, positions * dim]``: read ``part`` of every feature
    of unit ``unit`` (``positions``: their slots in all; a pooled unit: its sums)."""

    unit: int
    part: int
    positions: int
    dim: int


@register_layout(LAYOUT)
class CompressedTables(TableLayout):
    """Table group -> compression method; row methods share one fused kernel (module docstring).

    Args:
        schema: its sparse features are the inputs.
        num_embeddings: table group -> number of ids.
        methods: table group -> method; groups not named keep an exact table.
        optimizer: the fused kernel's optimizer (row methods).
        init_scale: kernel rows start uniform in ``[-init_scale, init_scale]`` (a method may re-initialize its tables).
        storage: ``False`` builds the input side and the methods only, the kernel on the meta device
            (no rows allocated, no forward until a kernel replaces it: post-training quantization).
    """

    packed_reads = True  # forward reads the kernel with rows of its packed tables (kernel(..., packed=True))

    def __init__(
        self,
        schema: Schema,
        num_embeddings: Mapping[str, int],
        methods: Mapping[str, CompressionMethod] | None = None,
        optimizer: TableOptimizer | None = None,
        init_scale: float = 0.05,
        device: torch.device | str | None = None,
        storage: bool = True,
    ) -> None:
        super().__init__()
        methods = dict(methods or {})
        self.schema = schema
        self.features: list[FeatureSpec] = schema.sparse_features
        groups = list(schema.tables)
        check_groups(methods, groups, "compression")
        missing = [g for g in groups if g not in num_embeddings]
        if missing:
            raise ValueError(f"num_embeddings has no id count for table group(s) {missing}")
        self.rows = {g: int(num_embeddings[g]) for g in groups}
        self.group_dims = {g: schema.tables[g][0].embedding_dim for g in groups}
        for g in groups:
            if g not in methods:
                methods[g] = method_class(EXACT)(self.rows[g], self.group_dims[g])
            methods[g].group = g
            check_method(g, methods[g], self.rows[g], self.group_dims[g])
        self.methods = nn.ModuleDict({g: methods[g] for g in groups})  # type: ignore[misc]
        self.dims = {f.name: f.embedding_dim for f in self.features}
        self.slots = {f.name: f.max_len if f.is_sequence else 1 for f in self.features}  # output slots per sample
        self.sequences = {f.name for f in self.features if f.is_sequence}
        self.init_scale = init_scale
        self.owner = _table_owners(methods, groups)
        # kernel tables of every row method (a shared one once, for its first group), grouped by
        # dim (fbgemm packs runs of one dim)
        tables = [(g, j, r, d) for g in groups if self.owner[g] == g for j, (r, d) in enumerate(methods[g].kernel_tables())]
        dim_rank = {d: i for i, d in enumerate(dict.fromkeys(d for *_, d in tables))}
        tables.sort(key=lambda t: dim_rank[t[3]])
        index = {(g, j): i for i, (g, j, _, _) in enumerate(tables)}
        # features -> units -> kernel blocks. A pooled feature: one block, a bag of its k reads per
        # slot. Other row features: one block per read, units of features whose methods combine
        # alike; blocks are ordered (physical table, unit, read, feature), so each read of a unit
        # is one run of columns, a [B, positions, d] view of the kernel's output.
        units: list[_Unit] = []
        batched_units: dict[Any, int] = {}
        keyed: list[tuple[tuple[int, int, int, int], _Block]] = []
        for at, f in enumerate(self.features):
            method = methods[f.table]  # type: ignore[index]
            reads = [index[(self.owner[f.table], j)] for j in method.kernel_reads()]  # type: ignore[index]
            if not reads:
                continue
            widths = [method.kernel_tables()[j][1] for j in method.kernel_reads()]
            pooled, key = method.pools_reads(), method.combine_key()
            if pooled and len(set(widths)) != 1:
                raise PluginError(
                    f"table group {f.table!r}: compression method {method.method_name!r} pools its reads "
                    f"in one bag, but they have different dims {widths}; a bag sums rows of one dim"
                )
            if pooled or key is None:
                unit = len(units)
                units.append(_Unit((f.name,), pooled, False))
            else:
                unit = batched_units.setdefault((key, tuple(widths), f.embedding_dim), len(units))
                if unit == len(units):
                    units.append(_Unit((), False, True))
                units[unit] = dataclasses.replace(units[unit], features=(*units[unit].features, f.name))
            if pooled:
                keyed.append(((dim_rank[widths[0]], unit, 0, at), _Block(f.name, tuple(range(len(reads))), reads[0], self.slots[f.name], widths[0])))
            else:
                keyed += [((dim_rank[w], unit, r, at), _Block(f.name, (r,), t, self.slots[f.name], w)) for r, (t, w) in enumerate(zip(reads, widths))]
        keyed.sort(key=lambda kb: kb[0])
        blocks = [b for _, b in keyed]
        segments: list[_Segment] = []
        for (_, unit, part, _), b in keyed:
            if segments and (segments[-1].unit, segments[-1].part) == (unit, part):
                segments[-1] = dataclasses.replace(segments[-1], positions=segments[-1].positions + b.slots)
            else:
                segments.append(_Segment(unit, part, b.slots, b.dim))
        self.units, self.segments = units, segments
        self.row_features = [f.name for f in self.features if methods[f.table].kernel_tables()]  # type: ignore[index]
        self.pooled = {u.features[0] for u in units if u.pooled}  # features whose reads the kernel sums: no combine
        self.optimizer = optimizer or TableOptimizer()
        for method in methods.values():
            method.use_table_optimizer(self.optimizer)
        self.kernel = None if not tables else FusedTables(
            rows=[r for *_, r, _ in tables],
            dims=[d for *_, d in tables],
            slot_tables=[b.table for b in blocks for _ in range(b.slots)],
            optimizer=self.optimizer,
            init_scale=init_scale,
            device=device if storage else "meta",
            table_names=[f"{g}/{j}" for g, j, _, _ in tables],
        )
        if self.kernel is not None:  # each read's table's first row in its packed physical table
            reads_of = {f: [index[(self.owner[f_.table], j)] for j in methods[f_.table].kernel_reads()]  # type: ignore[index]
                        for f_ in self.features for f in [f_.name]}
            blocks = [dataclasses.replace(b, starts=tuple(self.kernel.row_offsets[reads_of[b.feature][p]] for p in b.parts))
                      for b in blocks]
        self.blocks = blocks
        self._full: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (batch, offsets, row starts) of the last full batch
        if self.kernel is not None and storage:
            with torch.no_grad():
                for (g, j, _, _), weight in zip(tables, self.kernel.weights()):
                    methods[g].initialize(j, weight)
        (self if storage else self.methods).to(device or "cpu")  # a meta kernel stays there
        self._memo = BatchMemo()
        self._regularization: torch.Tensor | None = None  # the methods' loss terms of the latest forward

    @classmethod
    def from_options(
        cls,
        schema: Schema,
        num_embeddings: Mapping[str, int],
        compression: Mapping[str, Any],
        optimizer: TableOptimizer | None = None,
        where: str = "layout.compression",
    ) -> CompressedTables:
        """The layout a run config's ``compression`` mapping (table group -> ``{method: name,
        budget: fraction or bytes, **options}``) describes, with fresh weights."""
        check_compression(compression, where)
        check_groups(compression, list(schema.tables), where)
        methods = {}
        for group, spec in compression.items():
            at = f"{where}.{group}"
            options = {k: v for k, v in spec.items() if k not in ("method", "budget")}
            ids, dim = int(num_embeddings[group]), schema.tables[group][0].embedding_dim
            budget = None if spec.get("budget") is None else budget_parameters(spec["budget"], ids, dim, at)
            methods[group] = build_method(spec["method"], at, lambda c: c.from_options(ids, dim, options, budget))
        return cls(schema, num_embeddings, methods, optimizer)

    # ---- forward --------------------------------------------------------------------------

    def forward(self, kjt: KeyedJaggedTensor) -> Embeddings:
        if kjt.lengths().numel() == 0:
            self._regularization = None
            return empty_embeddings(self.features, self.dims, kjt.values().device)
        inputs = self._memo.get(kjt, lambda k: batch_inputs(k, self.features, self.rows))
        ids, full = self._slot_ids(inputs)
        batch = next(iter(ids.values())).numel() // self.slots[self.features[0].name]
        kernel_vectors = self._kernel_vectors(ids, full, batch)
        computed = self._computed_vectors(ids, batch)
        out = Embeddings()
        for spec in self.features:
            slots, dim = self.slots[spec.name], self.dims[spec.name]
            shape = (batch, slots, dim) if spec.is_sequence else (batch, dim)
            pooled = spec.name in self.pooled  # the kernel summed the reads (an empty slot: an empty bag, zeros)
            grid = None if full and not spec.is_sequence else ids[spec.name].view(slots, batch).T  # [B, P]
            if spec.name in kernel_vectors:
                vectors = kernel_vectors[spec.name]
                vectors = vectors if vectors.shape == shape else vectors.reshape(shape)  # no autograd node when it fits
            else:
                grid = ids[spec.name].view(slots, batch).T
                vectors = computed[spec.name].reshape(shape)
            present = None if grid is None else (grid >= 0 if spec.is_sequence else grid.squeeze(1) >= 0)
            if not full and not pooled and present is not None and not bool(present.all()):
                vectors = vectors * present.unsqueeze(-1).to(vectors.dtype)
            if spec.is_sequence:
                out.sequences[spec.name], out.masks[spec.name] = vectors, present.contiguous()  # type: ignore[union-attr]
            else:
                out.pooled[spec.name] = vectors
        terms = [t for t in (m.regularization_loss() for m in self.methods.values()) if t is not None]  # type: ignore[operator]
        self._regularization = torch.stack(terms).sum() if terms else None
        return out

    def _slot_ids(self, inputs: BatchInputs) -> tuple[dict[str, torch.Tensor], bool]:
        """Feature -> the ids of its output slots, slot-major ``[P * B]`` (``-1``: empty), and
        whether every slot holds one id (then they are views of the kernel inputs, no copy)."""
        full = inputs.one_per_bag or (
            inputs.indices.numel() == inputs.offsets.numel() - 1 and bool((inputs.offsets.diff() == 1).all())
        )
        if full:
            batch = inputs.indices.numel() // sum(self.slots.values())
            return {
                f.name: inputs.indices[start : start + self.slots[f.name] * batch]
                for f in self.features for start in [inputs.places[f.name][0]]
            }, True
        grids = {f.name: inputs.slot_rows(f.name).squeeze(-1) for f in self.features}  # [B] or [B, L]
        return {name: grid.reshape(grid.shape[0], -1).T.reshape(-1) for name, grid in grids.items()}, False

    def _computed_vectors(self, ids: Mapping[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
        """Feature -> ``[B, P, D]`` of the features whose group has a computed method: one
        :meth:`~CompressionMethod.lookup_many` per table group, for all the features reading it."""
        readers: dict[str, list[FeatureSpec]] = {}
        for spec in self.features:
            if spec.name not in self.row_features:
                readers.setdefault(spec.table, []).append(spec)  # type: ignore[arg-type]
        out = {}
        for group, specs in readers.items():
            grids = [ids[s.name].view(self.slots[s.name], batch).T.clamp(min=0).reshape(-1) for s in specs]
            for spec, vectors in zip(specs, self.methods[group].lookup_many(grids)):  # type: ignore[operator]
                out[spec.name] = vectors.view(batch, self.slots[spec.name], self.dims[spec.name])
        return out

    def _kernel_vectors(self, ids: Mapping[str, torch.Tensor], full: bool, batch: int) -> dict[str, torch.Tensor]:
        """Row feature -> its vectors, ``[B, P * D]`` or ``[B, P, D]`` (slots not yet masked), from one
        kernel call: a pooled feature's bag sums, the others combined per unit."""
        if self.kernel is None:
            return {}
        rows = {}
        for name in self.row_features:
            method = self.methods[self.schema[name].table]  # type: ignore[index]
            flat = ids[name]  # [P * B], slot-major
            rows[name] = method.kernel_rows(flat) if full else torch.where((flat >= 0)[None], method.kernel_rows(flat.clamp(min=0)), -1)
        # the kernel's ids: per block [P * B, len(parts)] (a bag per slot), runs of one bag width in one copy
        runs: list[tuple[int, list[torch.Tensor]]] = []
        for b in self.blocks:
            r = rows[b.feature]
            read = r[b.parts[0]][:, None] if len(b.parts) == 1 else (r if len(b.parts) == r.shape[0] else r[list(b.parts)]).T
            if runs and runs[-1][0] == len(b.parts):
                runs[-1][1].append(read)
            else:
                runs.append((len(b.parts), [read]))
        pieces = [torch.cat(reads).view(-1) for _, reads in runs]
        flat = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        offsets, starts = self._full_bags(batch, flat.device)
        if bool(flat.min() >= 0):
            out = self.kernel(flat + starts, offsets, packed=True)
        else:  # bags of the rows present (a slot of no row: an empty bag, zeros)
            present = flat >= 0
            counts = [p.view(-1, k).sum(1) for (k, _), p in zip(runs, present.split([x.numel() for x in pieces]))]
            out = self.kernel((flat + starts)[present], offsets_of(torch.cat(counts)), packed=True)
        parts: dict[int, dict[int, torch.Tensor]] = {}
        vectors: dict[str, torch.Tensor] = {}
        for seg, columns in zip(self.segments, split_columns(out, [s.positions * s.dim for s in self.segments])):
            unit = self.units[seg.unit]
            if unit.pooled:
                vectors[unit.features[0]] = columns
            else:
                shape = (batch, seg.positions, seg.dim) if unit.batched or unit.features[0] in self.sequences else (batch, seg.dim)
                parts.setdefault(seg.unit, {})[seg.part] = columns.view(shape)
        for u, unit_parts in parts.items():
            unit = self.units[u]
            methods = [self.methods[self.schema[f].table] for f in unit.features]  # type: ignore[index]
            grids = [ids[f].view(self.slots[f], batch).T for f in unit.features]  # [B, P] each
            if unit.batched:
                unit_ids = grids[0] if len(grids) == 1 else torch.cat(grids, dim=1)
            else:
                unit_ids = grids[0] if unit.features[0] in self.sequences else grids[0].reshape(batch)
            runs = [(m, self.slots[f]) for m, f in zip(methods, unit.features)]
            unit_ids = unit_ids if full else unit_ids.clamp(min=0)  # an empty slot (-1) reads as id 0, zeroed later
            combined = methods[0].combine([unit_parts[j] for j in range(len(unit_parts))], unit_ids, runs)  # type: ignore[operator]
            if len(unit.features) == 1:
                vectors[unit.features[0]] = combined
            else:  # one combine for all the unit's slots, split per feature (adjacent gradients pass through)
                widths = [self.slots[f] * self.dims[f] for f in unit.features]
                vectors.update(zip(unit.features, split_columns(combined.reshape(batch, -1), widths)))
        return vectors

    def _full_bags(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """For a batch of ``batch`` samples whose every read holds a row: the bag offsets (``len(parts)``
        rows per bag of a block) and, per kernel id, the first row of its table in the packed physical table."""
        if self._full is None or self._full[0] != batch or self._full[1].device != device:
            lengths = torch.tensor([len(b.parts) for b in self.blocks for _ in range(b.slots)], device=device)
            starts = torch.cat([torch.tensor(b.starts, device=device).repeat(b.slots * batch) for b in self.blocks])
            self._full = (batch, offsets_of(lengths.repeat_interleave(batch)), starts)
        return self._full[1], self._full[2]

    # ---- contract -------------------------------------------------------------------------

    def shapes(self, num_dense: int = 0) -> EmbeddingShapes:
        return EmbeddingShapes(
            pooled={f.name: f.embedding_dim for f in self.features if not f.is_sequence},
            sequences={f.name: (f.max_len, f.embedding_dim) for f in self.features if f.is_sequence},  # type: ignore[misc]
            num_dense=num_dense,
        )

    def num_ids(self, group: str) -> int:
        return group_size(self.rows, group, LAYOUT)

    def regularization_loss(self) -> torch.Tensor | None:
        """The methods' loss terms (:meth:`~CompressionMethod.regularization_loss`) of the latest forward, or ``None``."""
        return self._regularization

    def group_parameters(self, group: str) -> int:
        """Weights stored for table group ``group``: its kernel rows (a shared table counts for the
        first group that reads it) plus the method's own."""
        method: CompressionMethod = self.methods[group]  # type: ignore[index,assignment]
        rows = sum(r * d for r, d in method.kernel_tables()) if self.owner[group] == group else 0
        return rows + method.num_parameters()

    def group_bytes(self, group: str) -> int:
        """Bytes allocated for table group ``group``: its kernel tables (weights + fused optimizer
        state) plus the method's own tensors (with their Adam moments)."""
        method: CompressionMethod = self.methods[group]  # type: ignore[index,assignment]
        kernel = 0
        if self.kernel is not None and self.owner[group] == group:
            sizes = dict(zip(self.kernel.table_names, self.kernel.table_bytes()))
            kernel = sum(sizes[f"{group}/{j}"] for j in range(len(method.kernel_tables())))
        return kernel + method.memory_bytes()

    def dense_parameters(self) -> list[dict[str, Any]]:
        """The methods' own param groups (:meth:`~CompressionMethod.dense_parameters`)."""
        return [group for method in self.methods.values() for group in method.dense_parameters()]  # type: ignore[operator]

    def num_parameters(self) -> int:
        return sum(self.group_parameters(g) for g in self.methods)

    def memory_bytes(self) -> int:
        """Everything allocated: the kernel (weights, optimizer state, fbgemm's placeholders) and the methods' tensors."""
        kernel = self.kernel.memory_bytes() if self.kernel is not None else 0
        return kernel + sum(m.memory_bytes() for m in self.methods.values())  # type: ignore[misc]

    def summary(self) -> str:
        """One line per table group: method, parameters, bytes, bytes per id and bits per value
        (``8 bytes / (ids dim)``; codebooks, scales and optimizer state included), compression ratio
        (exact fp32 weights / stored weights) and, for hashing methods, the expected collision rate."""
        head = (f"{'table group':<20} {'ids':>10} {'dim':>4} {'method':<14} {'parameters':>12} {'bytes':>13} {'bytes/id':>9} "
                f"{'bits/value':>10} {'ratio':>7} {'collisions':>10}")  # fmt: skip
        lines = [head, "-" * len(head)]
        for group, method in self.methods.items():
            params = self.group_parameters(group)
            rate = method.collision_rate()  # type: ignore[operator]
            ids, dim, stored = self.rows[group], self.group_dims[group], self.group_bytes(group)
            ratio = ids * dim / max(params, 1)
            lines.append(
                f"{group:<20} {ids:>10,} {dim:>4} {method.method_name:<14} {params:>12,} {stored:>13,} {stored / ids:>9.1f} "
                f"{8 * stored / (ids * dim):>10.2f} {ratio:>6.1f}x {'-' if rate is None else f'{rate:.4f}':>10}"
            )
            shared = f" (tables shared with {self.owner[group]})" if self.owner[group] != group else ""
            lines.append(f"{'':<20} {method.details()}{shared}")  # type: ignore[operator]
        lines.append(f"total parameters {self.num_parameters():,}  memory {self.memory_bytes():,} bytes (weights + optimizer state)")
        return "\n".join(lines)

    def check_prefix(self, dim: int) -> None:
        """Matryoshka over compressed tables: every method must keep a ``dim`` prefix meaningful
        (:meth:`~CompressionMethod.supports_prefix`; all built-in methods do except the ``concat``
        combines of QR and double hashing below half the dim)."""
        refused = [f"{g} ({m.method_name})" for g, m in self.methods.items() if not m.supports_prefix(dim)]  # type: ignore[operator]
        if refused:
            raise ValueError(
                f"matryoshka: a prefix of {dim} columns does not embed ids on its own for table group(s) {refused}; "
                "use a larger smallest prefix or another combine"
            )

    def serving_layout(self) -> TableLayout:
        """Itself, after every method's post-training :meth:`~CompressionMethod.finalize`."""
        for method in self.methods.values():
            method.finalize()  # type: ignore[operator]
        return self

    def compact(self) -> CompactTables:
        """The plain lookup copy of the current vectors (:meth:`CompactTables.copy_of`), e.g. for Matryoshka prefixes."""
        return CompactTables.copy_of(self)

    def quantization_source(self) -> tuple[FusedTables, dict[str, Any]]:
        """The fused kernel (every row method's tables) and :meth:`state_config`, for post-training
        quantization; ``ValueError`` naming the groups whose method computes its vectors (no rows)."""
        computed = [f"{g!r} ({m.method_name})" for g, m in self.methods.items() if not m.kernel_tables()]  # type: ignore[operator]
        if computed or self.kernel is None:
            raise ValueError(
                f"compressed tables: post-training quantization quantizes kernel rows, but table group(s) "
                f"{', '.join(computed)} use a computed method (no rows); quantize a compressed layout whose "
                "methods all keep rows (exact, hashing, double_hashing, qr, adaptive, mixed_dims, multiplexed)"
            )
        return self.kernel, self.state_config()

    def quantization_tensors(self) -> dict[str, torch.Tensor]:
        """The methods' own tensors ``method/<group>/<name>`` (e.g. mixed_dims' projections), kept in fp32."""
        return {f"method/{group}/{k}": v for group, method in self.methods.items() for k, v in method.export_state()[0].items()}  # type: ignore[operator]

    def state_config(self) -> dict[str, Any]:
        """The JSON-ready config of :meth:`export_state`: each group's method with its options (and
        the package of a third-party method), the id counts, the kernel's optimizer."""
        return self._state_config({g: m.export_state()[1] for g, m in self.methods.items()})  # type: ignore[operator]

    def _state_config(self, method_configs: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
        configs = {}
        for group, config in method_configs.items():
            package = provider(type(self.methods[group]))
            configs[group] = {**config, **({"package": package} if package else {})}
        return {
            "layout": LAYOUT,
            "num_embeddings": dict(self.rows),
            "optimizer": dataclasses.asdict(self.kernel.current_optimizer() if self.kernel is not None and self.kernel.has_storage else self.optimizer),
            "init_scale": self.init_scale,
            "methods": configs,
        }

    def export_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors ``kernel/<table>.<state>`` and ``method/<group>/<name>``; config :meth:`state_config`."""
        tensors = {} if self.kernel is None else {f"kernel/{k}": v for k, v in self.kernel.state_tensors().items()}
        configs = {}
        for group, method in self.methods.items():
            own, configs[group] = method.export_state()  # type: ignore[operator]
            tensors.update({f"method/{group}/{k}": v for k, v in own.items()})
        return tensors, self._state_config(configs)

    @classmethod
    def from_config(
        cls,
        schema: Schema,
        config: Mapping[str, Any],
        device: torch.device | str | None = None,
        storage: bool = True,
        tensors: Mapping[str, torch.Tensor] | None = None,
    ) -> CompressedTables:
        """The layout of the :meth:`state_config` ``config``: fresh kernel rows (none: ``storage=False``),
        the methods from their options, or from their own ``tensors`` (``method/<group>/<name>``) when
        given. A method that is not installed is an ``UnknownMethodError`` naming the package the config recorded."""
        check_layout(config, LAYOUT)
        methods = {}
        for group, spec in config["methods"].items():
            cls_ = method_class(spec["method"], spec.get("package"))
            options = {k: v for k, v in spec.items() if k != "package"}
            ids, dim = int(config["num_embeddings"][group]), schema.tables[group][0].embedding_dim
            if tensors is None:
                methods[group] = cls_.from_options(ids, dim, {k: v for k, v in options.items() if k != "method"}, None)
            else:
                prefix = f"method/{group}/"
                own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                methods[group] = cls_.from_state(ids, dim, own, options)
        optimizer = TableOptimizer(**config["optimizer"])
        return cls(schema, config["num_embeddings"], methods, optimizer, config.get("init_scale", 0.05), device=device, storage=storage)

    @classmethod
    def from_state(
        cls,
        schema: Schema,
        tensors: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        device: torch.device | str | None = None,
    ) -> CompressedTables:
        """The layout :meth:`export_state` described: same outputs, same optimizer state. A method
        that is not installed is an ``UnknownMethodError`` naming the package the artifact recorded."""
        tables = cls.from_config(schema, config, tensors=tensors)
        if tables.kernel is not None:
            kernel = {k[len("kernel/"):]: v for k, v in tensors.items() if k.startswith("kernel/")}
            tables.kernel.load_state_tensors(kernel, source=f"{LAYOUT} state")
        return tables.to(device or "cpu")


def _table_owners(methods: Mapping[str, CompressionMethod], groups: list[str]) -> dict[str, str]:
    """Group -> the group whose kernel tables it reads: itself, or the first group of its share key."""
    first: dict[str, str] = {}
    owner = {}
    for g in groups:
        key = methods[g].share_key()
        owner[g] = g if key is None else first.setdefault(key, g)
        if owner[g] != g and methods[g].kernel_tables() != methods[owner[g]].kernel_tables():
            raise ValueError(
                f"table groups {owner[g]!r} and {g!r} share kernel tables {key!r} but give different sizes "
                f"{methods[owner[g]].kernel_tables()} and {methods[g].kernel_tables()}; give both the same rows and dims"
            )
    return owner
