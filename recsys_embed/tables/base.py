"""What every table layout shares: the output type, the fused optimizer config, the
fbgemm batched-embedding core (ids in a KeyedJaggedTensor: :mod:`.jagged`).

Shape notation: B batch size, L a sequence feature's ``max_len``, D an embedding dim.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any
from dataclasses import dataclass, field

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode, PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    EmbeddingLocation,
    SplitTableBatchedEmbeddingBagsCodegen,
)
from torch import nn

from recsys_embed.features import FeatureSpec, Schema

_OPTIMIZERS = {
    "sgd": EmbOptimType.EXACT_SGD,
    "adagrad": EmbOptimType.EXACT_ADAGRAD,
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    "adam": EmbOptimType.ADAM,
    "partial_rowwise_adam": EmbOptimType.PARTIAL_ROWWISE_ADAM,
    "lamb": EmbOptimType.LAMB,
}
_GPU_ONLY = {"adam", "partial_rowwise_adam", "lamb"}
# names of the per-table states fbgemm's split_optimizer_states() returns, in its order
_STATE_NAMES = {
    "sgd": (),
    "adagrad": ("momentum1",),
    "rowwise_adagrad": ("momentum1",),
    "adam": ("momentum1", "momentum2"),
    "partial_rowwise_adam": ("momentum1", "momentum2"),
    "lamb": ("momentum1", "momentum2"),
}
_STATE_PREFIXES = ("weights", "momentum1", "momentum2", "prev_iter", "row_counter")


@dataclass
class Embeddings:
    """Per-feature embeddings produced by a table layout.

    Attributes:
        pooled: feature -> ``[B, D]`` (categorical and bucketized numeric features).
        sequences: feature -> ``[B, L, D]``, left-aligned (oldest kept id first), zero padded.
        masks: feature -> ``[B, L]`` bool, True where ``sequences`` holds a real id.
    """

    pooled: dict[str, torch.Tensor] = field(default_factory=dict)
    sequences: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    def concat_pooled(self) -> torch.Tensor:
        """The pooled embeddings side by side, ``[B, sum of D]`` in feature order."""
        if not self.pooled:
            raise ValueError("concat_pooled: these embeddings have no pooled (categorical) feature")
        return torch.cat(list(self.pooled.values()), dim=1)


@dataclass
class EmbeddingShapes:
    """What a model needs to know of a layout's output: ``pooled`` feature -> D,
    ``sequences`` feature -> (L, D), and the number of dense features."""

    pooled: dict[str, int] = field(default_factory=dict)
    sequences: dict[str, tuple[int, int]] = field(default_factory=dict)
    num_dense: int = 0


@dataclass(frozen=True)
class TableOptimizer:
    """The optimizer fused into the embedding kernel (the update runs inside backward).

    ``name``: sgd, adagrad, rowwise_adagrad (CPU and GPU); adam, partial_rowwise_adam,
    lamb (GPU only: fbgemm has no CPU kernel for them).
    """

    name: str = "rowwise_adagrad"
    lr: float = 0.05
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in _OPTIMIZERS:
            raise ValueError(f"table optimizer {self.name!r} is not one of {sorted(_OPTIMIZERS)}")
        if self.lr <= 0:
            raise ValueError(f"table optimizer lr must be > 0, got {self.lr}")


class FusedTables(nn.Module):
    """fbgemm's batched embedding kernel (TBE) with a fused optimizer.

    ``rows[t]`` x ``dims[t]`` is table t; ``slot_tables[s]`` names the table slot s reads.
    ``forward(indices, offsets)`` takes the ids of all slots, slot-major then sample
    (``offsets`` has ``S * B + 1`` entries), each id relative to its slot's table, sums each
    bag and returns ``[B, sum(slot dims)]``.

    Consecutive tables of one dim are packed into one physical fbgemm table (table t starts
    at row ``row_offsets[t]``; ``forward`` shifts the ids). The math is unchanged (every
    optimizer here updates rows independently), but fbgemm's CPU rowwise-Adagrad backward
    pays about 1 ms per table that only one slot reads, which 26 one-feature tables turn into
    a 2x slowdown. The slots of one physical table must be contiguous (fbgemm's CPU backward
    needs it), so slots are grouped by dim. :meth:`weights` and :meth:`optimizer_states`
    give per-table views.

    ``forward`` checks every id against its own table (fbgemm's check would only see the
    packed table, so it is off) unless the caller passes ``validated=True``.

    ``device="meta"`` builds the kernel without storage: its geometry (``rows``, ``dims``,
    ``slot_tables``, ``table_names``, optimizer) and the shapes of :meth:`state_views` are
    there, but no weight or optimizer state is allocated (``memory_bytes()`` is 0), no
    random number is drawn, and ``forward`` and state copies raise. A layout built with
    ``storage=False`` holds such a kernel (``recsys_embed.jobs.sharding`` shards it).
    """

    def __init__(
        self,
        rows: list[int],
        dims: list[int],
        slot_tables: list[int],
        optimizer: TableOptimizer,
        init_scale: float = 0.05,
        device: torch.device | str | None = None,
        table_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        device = torch.device(device or "cpu")
        on_gpu = device.type == "cuda"
        if optimizer.name in _GPU_ONLY and not on_gpu:
            raise ValueError(
                f"table optimizer {optimizer.name!r} has no CPU kernel in fbgemm; "
                "use 'rowwise_adagrad', 'adagrad' or 'sgd' on CPU"
            )
        names = list(table_names) if table_names else [f"table{t}" for t in range(len(rows))]
        odd = {n: d for n, d in zip(names, dims) if d % 4}
        if odd:
            raise ValueError(f"embedding dims must be multiples of 4 (fbgemm's kernel needs it), got {odd}")
        location = EmbeddingLocation.DEVICE if on_gpu else EmbeddingLocation.HOST
        compute = ComputeDevice.CUDA if on_gpu else ComputeDevice.CPU
        self.rows = list(rows)
        self.dims = list(dims)
        self.slot_tables = list(slot_tables)
        self.optimizer = optimizer
        self.table_names = names
        self.init_scale = init_scale
        self.has_storage = device.type != "meta"
        # pack runs of consecutive same-dim tables: physical[t] and row_offsets[t] place table t
        self.physical: list[int] = []
        self.row_offsets: list[int] = []
        physical_rows: list[int] = []
        for t, (r, d) in enumerate(zip(rows, dims)):
            if t == 0 or d != dims[t - 1]:
                physical_rows.append(0)
            self.physical.append(len(physical_rows) - 1)
            self.row_offsets.append(physical_rows[-1])
            physical_rows[-1] += r
        slot_physical = [self.physical[t] for t in slot_tables]
        if any(b < a for a, b in zip(slot_physical, slot_physical[1:])):
            # fbgemm's CPU backward for the Adagrad family fails ("num of rows processed by
            # adagrad ... does not match c_block size") when a table's slots are not contiguous.
            raise ValueError(
                f"slot_tables {slot_tables} interleave tables of different dims {dims}; "
                "group the slots by dim (in the order of the tables) and map output columns back to features"
            )
        physical_dims = [dims[self.physical.index(p)] for p in range(len(physical_rows))]
        shifts = [self.row_offsets[t] for t in slot_tables]
        self.register_buffer("slot_shifts", torch.tensor(shifts, dtype=torch.int64, device=device), persistent=False)
        slot_rows = [rows[t] for t in slot_tables]
        self.register_buffer("slot_rows", torch.tensor(slot_rows, dtype=torch.int64, device=device), persistent=False)
        self.shifted = any(shifts)
        self.tbe = SplitTableBatchedEmbeddingBagsCodegen(
            embedding_specs=[(r, d, location, compute) for r, d in zip(physical_rows, physical_dims)],
            feature_table_map=slot_physical,
            optimizer=_OPTIMIZERS[optimizer.name],
            learning_rate=optimizer.lr,
            eps=optimizer.eps,
            weight_decay=optimizer.weight_decay,
            pooling_mode=PoolingMode.SUM,
            device=device,
            bounds_check_mode=BoundsCheckMode.NONE,  # forward checks ids per table, not per packed table
        )
        with torch.no_grad():
            for weight in self.tbe.split_embedding_weights():
                weight.uniform_(-init_scale, init_scale)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, validated: bool = False, packed: bool = False) -> torch.Tensor:
        """Bag sums ``[B, sum of slot dims]`` of ``indices`` ``[N]`` (int64, relative to each slot's
        table) in bags ``offsets`` ``[S * B + 1]`` (int64 or int32). ``validated=True``: the caller guarantees
        well-formed offsets and ids in ``[0, rows)`` of their tables, and the checks are skipped.
        ``packed=True``: the ids are already rows of the slot's packed physical table (its table's
        ``row_offsets`` added by the caller, unchecked): a bag may then sum rows of every table packed
        with the slot's (one dim), e.g. the two tables of a method whose reads are summed."""
        self._require_storage("forward")
        slots = self.slot_shifts.numel()
        bags = offsets.numel() - 1
        if bags % slots:
            raise ValueError(f"offsets must hold S * B + 1 entries for S = {slots} slots, got {offsets.numel()}")
        if packed:
            return self.tbe(indices, offsets)
        if not validated:
            self._check(indices, offsets)
        if self.shifted and indices.numel():  # table-relative ids -> rows of the packed physical table
            per_slot = offsets[:: bags // slots].diff()
            if indices.numel() == bags and bool((per_slot == bags // slots).all()):  # one id per bag: [S, B]
                indices = (indices.view(slots, -1) + self.slot_shifts[:, None]).view(-1)
            else:
                indices = indices + torch.repeat_interleave(self.slot_shifts, per_slot, output_size=indices.numel())
        return self.tbe(indices, offsets)

    def table_weight(self, table: int) -> torch.Tensor:
        """Table ``table``'s weights ``[rows, dim]`` as a tensor whose gradient, instead of flowing
        on, is applied by the fused optimizer in ``backward`` (the update the kernel's backward
        makes, for all rows at once; a row with zero gradient is unchanged): e.g. every item row
        for a tied output layer. Reading every row through the kernel instead (one id per bag)
        measured 1.7-2.3x slower on CPU at 2K-100K rows, most of it in fbgemm's backward. CPU
        optimizers only: sgd, adagrad, rowwise_adagrad."""
        self._require_storage("table_weight")
        if not torch.is_grad_enabled():
            return self.weights()[table].detach().clone()
        if self.optimizer.name not in _DENSE_UPDATES:
            raise ValueError(f"table optimizer {self.optimizer.name!r} has no dense update; use one of {sorted(_DENSE_UPDATES)}")
        return _FusedDenseRead.apply(torch.zeros(0, requires_grad=True), self, table)

    def apply_dense_gradient(self, table: int, grad: torch.Tensor) -> None:
        """One optimizer step on every row of table ``table`` with gradient ``grad [rows, dim]``
        (as the kernel's: ``weight_decay`` is not applied, fbgemm's default mode). It writes
        through ``.data``, unseen by autograd's version checks: a kernel ``forward`` of the same
        step saved the storage for its own backward, which reads only the gradient and updates
        the rows again (two optimizer steps, as two kernel reads would make)."""
        lr, eps = float(self.tbe.get_learning_rate()), self.optimizer.eps
        weight = self.weights()[table].data
        states = {name: state.data for name, state in self.optimizer_states()[table].items()}
        with torch.no_grad():
            grad = grad.to(weight.dtype)
            if self.optimizer.name == "sgd":
                weight.sub_(lr * grad)
            elif self.optimizer.name == "rowwise_adagrad":  # m_r += mean_d g^2; w_r -= lr g_r / (sqrt(m_r) + eps)
                momentum = states["momentum1"]
                momentum.add_(grad.pow(2).mean(1))
                weight.sub_(lr * grad / (momentum.sqrt() + eps)[:, None])
            else:  # adagrad: m += g^2; w -= lr g / (sqrt(m) + eps), per element
                momentum = states["momentum1"].view_as(grad)
                momentum.add_(grad.pow(2))
                weight.sub_(lr * grad / (momentum.sqrt() + eps))

    def _check(self, indices: torch.Tensor, offsets: torch.Tensor) -> None:
        """Raise for malformed offsets (``ValueError``) or ids outside their slot's table (``IndexError``)."""
        if int(offsets[0]) != 0 or int(offsets[-1]) != indices.numel() or bool((offsets.diff() < 0).any()):
            raise ValueError(
                f"offsets must rise from 0 to the number of indices ({indices.numel()}), "
                f"got {offsets[0].item()} .. {offsets[-1].item()} or a decrease"
            )
        if not indices.numel():
            return
        bags = offsets.numel() - 1
        bounds = offsets[:: bags // self.slot_rows.numel()]
        limits = torch.repeat_interleave(self.slot_rows, bounds.diff(), output_size=indices.numel())
        outside = (indices < 0) | (indices >= limits)
        if bool(outside.any()):
            at = int(outside.to(torch.uint8).argmax())
            slot = bisect.bisect_right(bounds.tolist(), at) - 1
            table = self.slot_tables[slot]
            raise IndexError(
                f"table {self.table_names[table]!r} (slot {slot}): ids must lie in [0, {self.rows[table]}), "
                f"got {int(indices[at])} at position {at}"
            )

    def _split(self, physical: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-table views ``[rows, ...]`` of per-physical-table tensors."""
        return [physical[p][o : o + r] for p, o, r in zip(self.physical, self.row_offsets, self.rows)]

    def weights(self) -> list[torch.Tensor]:
        """One ``[rows, dim]`` view per table (writes go into the kernel's storage)."""
        return self._split(self.tbe.split_embedding_weights())

    def optimizer_states(self) -> list[dict[str, torch.Tensor]]:
        """Per table, the fused optimizer's state views by name (e.g. ``momentum1`` ``[rows]``
        for rowwise Adagrad, ``[rows, dim]`` for Adagrad; nothing for SGD)."""
        names = _STATE_NAMES[self.optimizer.name]
        if not names:
            return [{} for _ in self.rows]
        physical = self.tbe.split_optimizer_states()
        per_state = [self._split([states[i] for states in physical]) for i in range(len(names))]
        return [dict(zip(names, views)) for views in zip(*per_state)]

    def current_optimizer(self) -> TableOptimizer:
        """The optimizer config with the learning rate the kernel uses now (schedules change it)."""
        return dataclasses.replace(self.optimizer, lr=float(self.tbe.get_learning_rate()))

    def state_views(self) -> dict[str, torch.Tensor]:
        """Views into the kernel of every table's weight and optimizer state: ``<table>.weight``,
        ``<table>.<state>`` (see :meth:`optimizer_states`) and ``step`` (the kernel's counter)."""
        views = {}
        for name, weight, states in zip(self.table_names, self.weights(), self.optimizer_states()):
            views[f"{name}.weight"] = weight
            views.update({f"{name}.{key}": value for key, value in states.items()})
        views["step"] = self.tbe.iter
        return views

    def check_state(self, tensors: Mapping[str, torch.Tensor], source: str = "state") -> None:
        """Raise ``ValueError`` unless ``tensors`` has exactly the names and shapes of :meth:`state_views`."""
        views = self.state_views()
        missing, unexpected = sorted(set(views) - set(tensors)), sorted(set(tensors) - set(views))
        if missing or unexpected:
            raise ValueError(f"{source}: table tensors do not fit this layout: missing {missing}, unexpected {unexpected}")
        for key, view in views.items():
            if tuple(tensors[key].shape) != tuple(view.shape):
                raise ValueError(
                    f"{source}: tensor {key!r} has shape {tuple(tensors[key].shape)}, the layout expects {tuple(view.shape)}"
                )

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Copies of :meth:`state_views` (on the CPU), e.g. for an artifact."""
        self._require_storage("state_tensors")
        return {key: view.detach().cpu().clone() for key, view in self.state_views().items()}

    def load_state_tensors(self, tensors: Mapping[str, torch.Tensor], source: str = "state") -> None:
        """Copy tensors written by :meth:`state_tensors` into the kernel (names and shapes must match)."""
        self._require_storage("load_state_tensors")
        self.check_state(tensors, source)
        with torch.no_grad():
            for key, target in self.state_views().items():
                target.copy_(tensors[key].to(device=target.device, dtype=target.dtype))

    def _require_storage(self, what: str) -> None:
        if not self.has_storage:
            raise RuntimeError(
                f"FusedTables.{what}: this kernel was built on the meta device (a layout with storage=False) "
                "and holds no weights; it only describes the tables (ShardedTables holds the rows)"
            )

    def num_parameters(self) -> int:
        return sum(r * d for r, d in zip(self.rows, self.dims))

    def memory_bytes(self) -> int:
        """Weights plus optimizer state, as allocated by the kernel (padding included)."""
        total = 0
        for prefix in _STATE_PREFIXES:
            for place in ("host", "dev", "uvm"):
                tensor = getattr(self.tbe, f"{prefix}_{place}", None)
                if isinstance(tensor, torch.Tensor):
                    total += _allocated_bytes(tensor)
        return total

    def table_bytes(self) -> list[int]:
        """Per table, the bytes of its weight and optimizer state views."""
        return [
            _allocated_bytes(weight) + sum(_allocated_bytes(s) for s in states.values())
            for weight, states in zip(self.weights(), self.optimizer_states())
        ]


_DENSE_UPDATES = ("sgd", "adagrad", "rowwise_adagrad")


class _FusedDenseRead(torch.autograd.Function):
    """A copy of one fused table's weights whose gradient is applied by its optimizer
    (:meth:`FusedTables.apply_dense_gradient`) in backward, once all uses have given theirs."""

    @staticmethod
    def forward(ctx: Any, anchor: torch.Tensor, kernel: FusedTables, table: int) -> torch.Tensor:
        ctx.kernel, ctx.table = kernel, table
        return kernel.weights()[table].detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, None]:
        ctx.kernel.apply_dense_gradient(ctx.table, grad)
        return None, None, None


class FusedLayoutState:
    """The state round trip of a layout whose storage is one :class:`FusedTables` (``self.kernel``):
    the layout provides ``state_config()`` and ``from_config(schema, config, device)``."""

    kernel: FusedTables

    def export_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, config)``: copies of the weights and optimizer state by name, and ``state_config()``."""
        return self.kernel.state_tensors(), self.state_config()  # type: ignore[attr-defined]

    def quantization_source(self) -> tuple[FusedTables, dict[str, Any]]:
        """The kernel (all the layout's rows) and ``state_config()``, for post-training quantization."""
        return self.kernel, self.state_config()  # type: ignore[attr-defined]

    @classmethod
    def from_state(
        cls,
        schema: Schema,
        tensors: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        device: torch.device | str | None = None,
    ) -> Any:
        """Rebuild the layout :meth:`export_state` described: same outputs, same optimizer state."""
        tables = cls.from_config(schema, config, device)  # type: ignore[attr-defined]
        tables.kernel.load_state_tensors(tensors, source=f"{config['layout']} state")
        return tables


def _allocated_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor's elements take (0 on the meta device, which allocates nothing)."""
    return 0 if tensor.is_meta else tensor.numel() * tensor.element_size()


def check_layout(config: Mapping[str, Any], expected: str) -> None:
    """Refuse a saved config that describes another layout than the one rebuilding it."""
    if config.get("layout") != expected:
        raise ValueError(f"the layout config describes layout {config.get('layout')!r}, not {expected!r}")


def adjacent_columns(parts: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The ``[B, sum of widths]`` view that ``parts`` (``[B, w_i]`` each) are the consecutive
    column blocks of, in order, or ``None``. ``torch.cat(parts, dim=1)`` equals it; a
    ``torch.cat`` or ``split`` over columns leaves its gradients in this form."""
    first = parts[0]
    if first.dim() != 2 or first.stride(1) != 1:
        return None
    rows, row_stride, start = first.shape[0], first.stride(0), first.storage_offset()
    storage = first.untyped_storage().data_ptr()
    width = 0
    for part in parts:
        if (
            part.dim() != 2
            or part.shape[0] != rows
            or part.dtype != first.dtype
            or part.stride() != (row_stride, 1)
            or part.storage_offset() != start + width
            or part.untyped_storage().data_ptr() != storage
        ):
            return None
        width += part.shape[1]
    return first.as_strided((rows, width), (row_stride, 1), start)


class _SplitColumns(torch.autograd.Function):
    """``flat.split(widths, dim=1)`` whose backward passes the gradients' common buffer on
    when they are its adjacent column blocks (see :func:`adjacent_columns`) instead of
    concatenating them: the usual case when a model concatenates the pooled embeddings,
    which otherwise costs a full copy of the kernel's output gradient per step."""

    @staticmethod
    def forward(ctx: Any, flat: torch.Tensor, widths: list[int]) -> tuple[torch.Tensor, ...]:
        ctx.widths = widths
        return flat.split(widths, dim=1)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        present = [g for g in grads if g is not None]
        joined = adjacent_columns(present) if len(present) == len(grads) else None
        if joined is None:
            rows, like = present[0].shape[0], present[0]
            joined = torch.cat(
                [like.new_zeros(rows, w) if g is None else g for g, w in zip(grads, ctx.widths)], dim=1
            )
        return joined.contiguous(), None


def split_columns(flat: torch.Tensor, widths: list[int]) -> tuple[torch.Tensor, ...]:
    """``flat.split(widths, dim=1)``; with gradients, a backward that passes adjacent gradient
    column blocks on without a copy (:class:`_SplitColumns`)."""
    return _SplitColumns.apply(flat, widths) if flat.requires_grad else flat.split(widths, dim=1)


def unpack_output(
    flat: torch.Tensor,
    slot_order: Sequence[FeatureSpec],
    dims: Mapping[str, int],
    masks: Mapping[str, torch.Tensor],
    features: Sequence[FeatureSpec],
    pooled_sequences: bool = False,
) -> Embeddings:
    """Split the kernel's ``[B, W]`` output into per-feature views.

    ``slot_order``: the features in the order their slots were fed to the kernel; ``dims``:
    feature -> D (per position for sequences); ``masks``: sequence feature -> ``[B, L]``;
    ``features``: the order of the returned dicts; ``pooled_sequences``: each sequence had one
    slot (one bag, summed by the kernel), ``masks`` holds its kept lengths ``[B]`` instead, and
    its mean goes to ``pooled``. One split (not slicing per feature) keeps
    backward to one concatenation of the gradients, or none when they arrive as adjacent
    columns of one tensor.
    """
    widths = [dims[f.name] * (f.max_len if f.is_sequence and not pooled_sequences else 1) for f in slot_order]
    pieces = dict(zip((f.name for f in slot_order), split_columns(flat, widths)))
    batch = flat.shape[0]
    out = Embeddings()
    for spec in features:
        if spec.is_sequence and not pooled_sequences:
            out.sequences[spec.name] = pieces[spec.name].reshape(batch, spec.max_len, dims[spec.name])
            out.masks[spec.name] = masks[spec.name]
        elif spec.is_sequence:  # the kernel's sum -> the mean (zeros for an empty sequence)
            out.pooled[spec.name] = pieces[spec.name] / masks[spec.name].clamp(min=1).unsqueeze(1).to(flat.dtype)
        else:
            out.pooled[spec.name] = pieces[spec.name]
    return out


def empty_embeddings(
    features: Sequence[FeatureSpec], dims: Mapping[str, int], device: torch.device, pooled_sequences: bool = False
) -> Embeddings:
    """The output for a batch of zero rows (fbgemm and torchrec do not take one)."""
    out = Embeddings()
    for spec in features:
        if spec.is_sequence and not pooled_sequences:
            out.sequences[spec.name] = torch.zeros(0, spec.max_len, dims[spec.name], device=device)
            out.masks[spec.name] = torch.zeros(0, spec.max_len, dtype=torch.bool, device=device)
        else:
            out.pooled[spec.name] = torch.zeros(0, dims[spec.name], device=device)
    return out

