"""What every table layout shares: the output type, the fused optimizer config, the
fbgemm batched-embedding core and the KeyedJaggedTensor to kernel-input conversion.

Shape notation: B batch size, L a sequence feature's ``max_len``, D an embedding dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    EmbeddingLocation,
    SplitTableBatchedEmbeddingBagsCodegen,
)
from torch import nn

_OPTIMIZERS = {
    "sgd": EmbOptimType.EXACT_SGD,
    "adagrad": EmbOptimType.EXACT_ADAGRAD,
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    "adam": EmbOptimType.ADAM,
    "partial_rowwise_adam": EmbOptimType.PARTIAL_ROWWISE_ADAM,
    "lamb": EmbOptimType.LAMB,
}
_GPU_ONLY = {"adam", "partial_rowwise_adam", "lamb"}


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

    ``rows[t]`` x ``dims[t]`` is table t; ``slot_tables[s]`` names the table slot s reads
    (non-decreasing: the slots of one table are contiguous, as fbgemm's CPU backward needs).
    ``forward(indices, offsets)`` takes the ids of all slots, slot-major then sample
    (``offsets`` has ``S * B + 1`` entries), sums each bag and returns ``[B, sum(slot dims)]``.
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
        if any(b < a for a, b in zip(slot_tables, slot_tables[1:])):
            # fbgemm's CPU backward for the Adagrad family fails ("num of rows processed by
            # adagrad ... does not match c_block size") when a table's slots are not contiguous.
            raise ValueError(
                f"slot_tables must be grouped by table (non-decreasing), got {slot_tables}; "
                "order the slots by table and map output columns back to features"
            )
        location = EmbeddingLocation.DEVICE if on_gpu else EmbeddingLocation.HOST
        compute = ComputeDevice.CUDA if on_gpu else ComputeDevice.CPU
        self.rows = list(rows)
        self.dims = list(dims)
        self.slot_tables = list(slot_tables)
        self.tbe = SplitTableBatchedEmbeddingBagsCodegen(
            embedding_specs=[(r, d, location, compute) for r, d in zip(rows, dims)],
            feature_table_map=self.slot_tables,
            optimizer=_OPTIMIZERS[optimizer.name],
            learning_rate=optimizer.lr,
            eps=optimizer.eps,
            weight_decay=optimizer.weight_decay,
            pooling_mode=PoolingMode.SUM,
            device=device,
            table_names=table_names,
        )
        with torch.no_grad():
            for weight in self.tbe.split_embedding_weights():
                weight.uniform_(-init_scale, init_scale)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.tbe(indices, offsets)

    def weights(self) -> list[torch.Tensor]:
        """One ``[rows, dim]`` view per table (writes go into the kernel's storage)."""
        return self.tbe.split_embedding_weights()

    def num_parameters(self) -> int:
        return sum(r * d for r, d in zip(self.rows, self.dims))

    def memory_bytes(self) -> int:
        """Weights plus optimizer state, as allocated by the kernel."""
        total = 0
        for name in ("weights_host", "weights_dev", "momentum1_host", "momentum1_dev", "momentum2_host", "momentum2_dev"):
            tensor = getattr(self.tbe, name, None)
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
        return total


def sequence_slots(values: torch.Tensor, lengths: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Spread a jagged sequence feature over ``max_len`` position slots.

    Keeps the most recent ``max_len`` ids of each row (the last ones), left-aligned: slot p
    holds the p-th kept id. Returns ``(values, lengths)`` ordered slot-major then sample,
    ``lengths`` of shape ``[max_len * B]`` holding 0 or 1.
    """
    batch = lengths.numel()
    lengths = lengths.to(torch.int64)
    starts = torch.cumsum(lengths, 0) - lengths
    kept = torch.clamp(lengths, max=max_len)
    row = torch.repeat_interleave(torch.arange(batch, device=values.device), lengths)
    pos = torch.arange(values.numel(), device=values.device) - torch.repeat_interleave(starts, lengths)
    pos = pos - (lengths - kept)[row]  # drop the oldest ids beyond max_len
    keep = pos >= 0
    grid = torch.full((max_len, batch), -1, dtype=torch.int64, device=values.device)
    grid[pos[keep], row[keep]] = values[keep].to(torch.int64)
    present = grid >= 0
    return grid[present], present.reshape(-1).to(torch.int64)


def check_ids(name: str, values: torch.Tensor, rows: int) -> None:
    """Raise a clear error for ids outside ``[0, rows)`` (the kernel must never read out of bounds)."""
    if values.numel() == 0:
        return
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= rows:
        raise IndexError(
            f"feature {name!r}: ids must lie in [0, {rows}) for its table, got min {lo} max {hi}; "
            "ids come from the fitted pipeline (0 missing, 1 out-of-vocabulary)"
        )
