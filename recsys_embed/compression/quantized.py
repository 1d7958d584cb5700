"""Post-training row-wise quantization: a trained layout's rows in fp16 / int8 / int4 / int2,
served by fbgemm's quantized batched kernel (``IntNBitTableBatchedEmbeddingBagsCodegen``) on the CPU.

Math, per row ``x`` ``[D]`` of a table and ``b`` bits (int types): scale ``s = (max x - min x) / (2^b - 1)``
and bias ``m = min x``, both stored as fp16; codes ``q_j = round((x_j - m) / s)`` in ``[0, 2^b - 1]``;
the kernel reads ``s q_j + m``, so ``|x_j - x̂_j| <= s / 2`` plus the fp16 rounding of ``s`` and ``m``.
fp16 rows are ``x`` rounded to fp16 (relative error <= 2^-11).

Storage, fbgemm's fused row-wise format, one uint8 row per id: ``D' b / 8`` bytes of codes then
4 bytes of fp16 scale and bias (int types), or ``2 D'`` bytes (fp16). ``D'`` is ``D`` padded up to a
multiple of :func:`pad_multiple` (4; 8 for int2, as fbgemm's quantizer packs codes into whole
2-byte words); the pad columns repeat the row's last value (its min and max, hence its scale and
error, are unchanged) and the layer drops them from the output. ``memory_bytes()`` is the buffer
the kernel allocated: codes, scales, biases and padding, each table rounded up to 128 bytes.

Which layouts: those whose rows all live in one fused kernel (per_feature, multiplexed, and
compressed layouts whose every method keeps rows: exact, hashing, double_hashing, qr, adaptive,
mixed_dims, multiplexed; :meth:`~recsys_embed.tables.TableLayout.quantization_source`); the
quantized layout keeps their input side (id checks, hashing, slots, sequence masks, a method's
combine) and replaces the kernel, so the outputs are the source's
:class:`~recsys_embed.tables.Embeddings`, pooled and sequence features alike. A compressed
layout's methods keep their own small tensors in fp32 (mixed_dims' projections:
:meth:`~recsys_embed.tables.TableLayout.quantization_tensors`). A layout with computed storage
(a compressed group of robe, tt_rec, dhe, dpq, lpt, lr2vq, ...), or one already quantized, is refused.

Example::

    >>> from recsys_embed.features import FeatureSpec, Schema
    >>> from recsys_embed.tables import PerFeatureTables, kjt_from_ids
    >>> tables = PerFeatureTables(Schema([FeatureSpec("item_id", embedding_dim=12)]), {"item_id": 100})
    >>> int2 = quantize(tables, 2)     # 12 dims padded to 16: 4 bytes of codes + 4 of scale/bias per row
    >>> int2.memory_bytes()    # 100 rows x 8 bytes, rounded up to 128 bytes (the fp32 rows: 4800 bytes)
    896
    >>> int2(kjt_from_ids({"item_id": torch.tensor([3, 7])})).pooled["item_id"].dtype
    torch.float32
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import accumulate
from typing import Any

import torch
from fbgemm_gpu.split_embedding_configs import SparseType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode, EmbeddingLocation, PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_inference import IntNBitTableBatchedEmbeddingBagsCodegen
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import Schema
from recsys_embed.tables.base import Embeddings, EmbeddingShapes, FusedTables, check_layout
from recsys_embed.tables.compact import CompactTables
from recsys_embed.tables.contract import TableLayout
from recsys_embed.tables.registry import layout_class, register_layout

LAYOUT = "quantized"
SPARSE_TYPES = {16: SparseType.FP16, 8: SparseType.INT8, 4: SparseType.INT4, 2: SparseType.INT2}
SCALE_BIAS_BYTES = 4  # fp16 scale + fp16 bias per int row


def check_bits(bits: Any) -> int:
    """``bits`` if it is one of 2, 4, 8, 16; a ``ValueError`` naming them otherwise."""
    if isinstance(bits, bool) or bits not in SPARSE_TYPES:
        raise ValueError(f"quantization bits must be one of {sorted(SPARSE_TYPES)}, got {bits!r}")
    return int(bits)


def pad_multiple(bits: int) -> int:
    """The multiple of which a row's stored dim must be: 4 (fbgemm's kernel), 8 for int2 (whole 2-byte code words)."""
    return max(4, 16 // bits)


def padded_dim(dim: int, bits: int) -> int:
    """``dim`` rounded up to :func:`pad_multiple`: ``padded_dim(12, 2) == 16``."""
    step = pad_multiple(bits)
    return -(-dim // step) * step


def quantize_rows(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """fp32 rows ``[n, D]`` to fused rows ``[n, row bytes]`` uint8 (module docstring), quantized on the CPU."""
    weight = weight.detach().to("cpu", torch.float32)
    extra = padded_dim(weight.shape[1], bits) - weight.shape[1]
    padded = torch.cat([weight, weight[:, -1:].expand(-1, extra)], dim=1).contiguous()
    if bits == 16:
        return padded.half().view(torch.uint8)
    return torch.ops.fbgemm.FloatToFusedNBitRowwiseQuantizedSBHalf(padded, bits)


def dequantize_rows(fused: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Fused rows ``[n, row bytes]`` back to fp32 ``[n, dim]`` (what the kernel reads for them)."""
    if bits == 16:
        return fused.view(torch.float16).float()[:, :dim]
    return torch.ops.fbgemm.FusedNBitRowwiseQuantizedSBHalfToFloat(fused.contiguous(), bits)[:, :dim]


class QuantizedKernel(nn.Module):
    """fbgemm's quantized inference kernel in the place of a :class:`FusedTables`: same tables
    (``rows``, ``dims``, ``table_names``), same slots, same call ``forward(indices, offsets)`` ->
    fp32 bag sums ``[B, sum of slot dims]``. One fbgemm table per table (no packing: inference
    has no per-table backward cost), on the host, fp32 output, ids checked by fbgemm per table.

    ``geometry`` gives the tables and slots (a meta-device kernel will do); ``fused`` holds each
    table's fused rows by name (:func:`quantize_rows`).
    """

    def __init__(self, geometry: FusedTables, bits: int, fused: Mapping[str, torch.Tensor], packed: bool = False) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.rows, self.dims = list(geometry.rows), list(geometry.dims)
        self.slot_tables, self.table_names = list(geometry.slot_tables), list(geometry.table_names)
        self.stored_dims = [padded_dim(d, bits) for d in self.dims]
        self._check(fused)
        # packed: the geometry's physical tables (runs of one dim, table t from row row_offsets[t]),
        # for callers whose ids are rows of the packed table (``forward(..., packed=True)``)
        self.packed = packed
        self.physical = list(geometry.physical) if packed else list(range(len(self.rows)))
        self.row_offsets = list(geometry.row_offsets) if packed else [0] * len(self.rows)
        members = [[t for t, p in enumerate(self.physical) if p == q] for q in range(max(self.physical, default=-1) + 1)]
        names = [self.table_names[m[0]] if len(m) == 1 else "+".join(self.table_names[t] for t in m) for m in members]
        shifts = [self.row_offsets[t] for t in self.slot_tables]
        self.register_buffer("slot_shifts", torch.tensor(shifts, dtype=torch.int64), persistent=False)
        self.shifted = any(shifts)
        self.tbe = IntNBitTableBatchedEmbeddingBagsCodegen(
            embedding_specs=[(n, sum(self.rows[t] for t in m), self.stored_dims[m[0]], SPARSE_TYPES[bits], EmbeddingLocation.HOST)
                             for n, m in zip(names, members)],
            feature_table_map=[self.physical[t] for t in self.slot_tables],
            pooling_mode=PoolingMode.SUM,
            device="cpu",  # its default is the current CUDA device
            bounds_check_mode=BoundsCheckMode.FATAL,
            output_dtype=SparseType.FP32,  # its default is fp16
        )  # fmt: skip
        self.tbe.initialize_weights()
        split = SCALE_BIAS_BYTES if bits < 16 else 0
        physical = [torch.cat([fused[self.table_names[t]] for t in m]) for m in members]
        self.tbe.assign_embedding_weights([
            (rows[:, : rows.shape[1] - split], rows[:, rows.shape[1] - split :] if split else None) for rows in physical
        ])  # fmt: skip
        # the output columns of each slot's real dims, dropping its pad columns
        starts = accumulate((self.stored_dims[t] for t in self.slot_tables), initial=0)
        columns = [torch.arange(self.dims[t]) + start for t, start in zip(self.slot_tables, starts)]
        self.padded = self.stored_dims != self.dims
        self.register_buffer("keep", torch.cat(columns), persistent=False)

    def _check(self, fused: Mapping[str, torch.Tensor]) -> None:
        expected = {n: (r, self.row_bytes(t)) for t, (n, r) in enumerate(zip(self.table_names, self.rows))}
        got = {n: tuple(t.shape) for n, t in fused.items()}
        if got != expected or any(t.dtype != torch.uint8 for t in fused.values()):
            raise ValueError(f"quantized rows: expected uint8 tables of shapes {expected}, got {got}")

    def row_bytes(self, table: int) -> int:
        """Bytes of one stored row of ``table``: codes of its padded dim, plus fp16 scale and bias for int types."""
        codes = self.stored_dims[table] * self.bits // 8
        return codes + (SCALE_BIAS_BYTES if self.bits < 16 else 0)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, validated: bool = False, packed: bool = False) -> torch.Tensor:
        """fp32 bag sums ``[B, sum of slot dims]`` of table-relative ``indices`` ``[N]`` in bags ``offsets``
        ``[S * B + 1]`` (bags of any number of rows, summed). fbgemm checks every id against its own
        table (its packed table for a ``packed`` kernel), ``validated`` or not (the argument keeps
        :class:`FusedTables`' call): an id outside is its ``RuntimeError``; the layouts raise
        ``IndexError`` naming the feature before the kernel sees the batch. ``packed=True`` (a kernel
        built ``packed``): the ids are rows of the slot's packed table, as :class:`FusedTables` takes them."""
        offsets = offsets.to(indices.dtype)
        if packed and not self.packed:
            raise ValueError("QuantizedKernel: packed ids need a kernel built with packed=True (the geometry's packed tables)")
        if self.shifted and not packed and indices.numel():  # table-relative ids -> rows of the packed table
            bags = offsets.numel() - 1
            per_slot = offsets[:: bags // self.slot_shifts.numel()].diff()
            indices = indices + torch.repeat_interleave(self.slot_shifts, per_slot, output_size=indices.numel())
        out = self.tbe(indices, offsets)
        return out.index_select(1, self.keep) if self.padded else out

    def _fused(self, table: int) -> torch.Tensor:
        """Table ``table``'s fused rows ``[rows, row bytes]`` uint8 (codes, then scale and bias), as the kernel holds them."""
        weight, scale_bias = self.tbe.split_embedding_weights()[self.physical[table]]
        rows = slice(self.row_offsets[table], self.row_offsets[table] + self.rows[table])
        return weight[rows] if scale_bias is None else torch.cat([weight[rows], scale_bias[rows]], dim=1)

    def fused_rows(self) -> dict[str, torch.Tensor]:
        """Table name -> a copy of its fused rows (:func:`quantize_rows`' format)."""
        return {name: self._fused(t).clone() for t, name in enumerate(self.table_names)}

    def weights(self) -> list[torch.Tensor]:
        """Per table, the fp32 rows ``[rows, dim]`` the kernel reads (dequantized copies)."""
        return [self.table_weight(t) for t in range(len(self.rows))]

    def table_weight(self, table: int) -> torch.Tensor:
        """Table ``table``'s fp32 rows ``[rows, dim]``, detached: nothing here trains."""
        return dequantize_rows(self._fused(table), self.bits, self.dims[table])

    def num_parameters(self) -> int:
        """Values stored, pad columns included: ``sum rows x D'``."""
        return sum(r * d for r, d in zip(self.rows, self.stored_dims))

    def memory_bytes(self) -> int:
        """The kernel's allocated host buffer: ``sum rows x row_bytes``, each table rounded up to 128 bytes."""
        return self.tbe.weights_host.numel() * self.tbe.weights_host.element_size()


@register_layout(LAYOUT)
class QuantizedTables(TableLayout):
    """A trained layout served with row-wise quantized rows, inference only (module docstring).

    ``source_config`` is the trained layout's state config (its ``from_config(schema, config,
    storage=False)`` builds the input side, whose fp32 kernel the quantized one replaces); ``fused``
    the fused rows of each table by name (:func:`quantize_rows`); ``source_tensors`` the source's
    own small tensors that are not rows (:meth:`~recsys_embed.tables.TableLayout.quantization_tensors`,
    e.g. mixed_dims' projections), kept in fp32 and given to ``from_config(..., tensors=...)``.
    Outputs, shapes and id checks are the source's. :func:`quantize` builds one from a trained layout.
    """

    def __init__(
        self,
        schema: Schema,
        source_config: Mapping[str, Any],
        bits: int,
        fused: Mapping[str, torch.Tensor],
        source_tensors: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.source_config = dict(source_config)
        source_class: Any = layout_class(self.source_config["layout"])
        extra = {"tensors": dict(source_tensors)} if source_tensors else {}
        self.source = source_class.from_config(schema, self.source_config, "cpu", storage=False, **extra)
        self.source_tensor_names = sorted(source_tensors or {})
        self.source.kernel = QuantizedKernel(self.source.kernel, bits, fused, packed=bool(getattr(self.source, "packed_reads", False)))
        self.source.requires_grad_(False)  # a method's own tensors (mixed_dims' projections) serve, never train
        self.features = self.source.features
        self.bits = self.kernel.bits
        super().train(False)

    @property
    def kernel(self) -> QuantizedKernel:
        return self.source.kernel  # type: ignore[return-value]

    def forward(self, kjt: KeyedJaggedTensor) -> Embeddings:
        return self.source(kjt)

    def train(self, mode: bool = True) -> QuantizedTables:
        """Eval mode only: ``train(True)`` raises, the quantized rows are inference-only."""
        if mode:
            raise ValueError(
                f"quantized tables ({self.bits} bits) are inference-only: train the fp32 model the "
                "artifact was quantized from, then quantize it again"
            )
        return super().train(False)

    def shapes(self, num_dense: int = 0) -> EmbeddingShapes:
        return self.source.shapes(num_dense)

    def num_ids(self, group: str) -> int:
        return self.source.num_ids(group)

    def table_vectors(self, group: str) -> torch.Tensor:
        """The dequantized vectors of ``group`` ``[num_ids, D]``, as the source reads them."""
        return self.source.table_vectors(group)

    def compact(self) -> CompactTables:
        """The plain fp32 lookup copy of the dequantized vectors (:meth:`CompactTables.copy_of`)."""
        return CompactTables.copy_of(self)

    def num_parameters(self) -> int:
        return self.kernel.num_parameters() + sum(t.numel() for t in self._source_tensors().values())

    def memory_bytes(self) -> int:
        """The quantized rows as allocated (codes, fp16 scales and biases, pad columns, table alignment),
        plus the source's own fp32 tensors (:meth:`quantization_tensors`)."""
        return self.kernel.memory_bytes() + sum(t.numel() * t.element_size() for t in self._source_tensors().values())

    def _source_tensors(self) -> dict[str, torch.Tensor]:
        """The source's non-row tensors, as it holds them now."""
        return self.source.quantization_tensors() if self.source_tensor_names else {}

    def summary(self) -> str:
        """Per table: rows, dim (stored dim with padding), bits, bytes per row, and the ratio to fp32 rows."""
        k = self.kernel
        head = f"{'table':<20} {'rows':>10} {'dim':>4} {'stored':>6} {'bits':>4} {'bytes/row':>9} {'ratio':>6}"
        lines = [head, "-" * len(head)]
        for t, name in enumerate(k.table_names):
            ratio = 4 * k.dims[t] / k.row_bytes(t)
            lines.append(f"{name:<20} {k.rows[t]:>10,} {k.dims[t]:>4} {k.stored_dims[t]:>6} {k.bits:>4} {k.row_bytes(t):>9} {ratio:>5.1f}x")
        lines.append(f"total parameters {self.num_parameters():,}  memory {self.memory_bytes():,} bytes (quantized rows, inference only)")
        return "\n".join(lines)

    def quantization_source(self) -> tuple[FusedTables, dict[str, Any]]:
        raise ValueError(
            f"these tables are already quantized ({self.bits} bits); quantize the fp32 artifact they came from"
        )

    def export_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors: each table's fused rows (uint8) by name, and the source's own tensors (fp32, named
        in the config's ``source_tensors``); config: the bits and the source's state config."""
        tensors: dict[str, torch.Tensor] = self.kernel.fused_rows()
        own = {k: v.detach().cpu().clone() for k, v in self._source_tensors().items()}
        config: dict[str, Any] = {"layout": LAYOUT, "bits": self.bits, "source": self.source_config}
        if own:
            config["source_tensors"] = sorted(own)
        return {**tensors, **own}, config

    @classmethod
    def from_state(
        cls,
        schema: Schema,
        tensors: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        device: torch.device | str | None = None,
    ) -> QuantizedTables:
        """The layout :meth:`export_state` described; CPU only (fbgemm's quantized kernel runs here on the host)."""
        check_layout(config, LAYOUT)
        if torch.device(device or "cpu").type != "cpu":
            raise ValueError(f"quantized tables run on the CPU only, got device {device!r}")
        names = set(config.get("source_tensors", ()))
        fused = {k: v for k, v in tensors.items() if k not in names}
        return cls(schema, config["source"], config["bits"], fused, {k: v for k, v in tensors.items() if k in names})


def quantize(layout: TableLayout, bits: int) -> QuantizedTables:
    """``layout``'s rows quantized to ``bits`` (2, 4, 8 or 16) on the CPU, served by fbgemm's quantized kernel.
    ``ValueError`` for other bits, a layout without fused rows, or one already quantized."""
    bits = check_bits(bits)
    kernel, config = layout.quantization_source()
    fused = {name: quantize_rows(weight, bits) for name, weight in zip(kernel.table_names, kernel.weights())}
    own = {k: v.detach().cpu().clone() for k, v in layout.quantization_tensors().items()}
    clash = sorted(set(own) & set(fused))
    if clash:
        raise ValueError(f"quantize: the layout's own tensors {clash} have the names of kernel tables")
    return QuantizedTables(Schema(features=list(layout.features)), config, bits, fused, own)
