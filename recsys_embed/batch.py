"""The batch type every pipeline produces and every job consumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass
class Batch:
    """One mini-batch of B samples.

    Attributes:
        sparse: ``KeyedJaggedTensor`` with one key per sparse feature (schema order).
            Categorical features are bags of length 1; sequences are jagged (most recent
            id last). Ids are int64.
        dense: ``[B, n_dense]`` float32, the transformed numeric features (schema order).
        labels: ``[B]`` float32 (0/1 for CTR) or empty when the data has no label.
        groups: ``[B]`` int64 group ids (e.g. user ids for GAUC), or ``None``.
    """

    sparse: KeyedJaggedTensor
    dense: torch.Tensor
    labels: torch.Tensor
    groups: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.dense.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            sparse=self.sparse.to(torch.device(device), non_blocking=non_blocking),
            dense=self.dense.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
            groups=None if self.groups is None else self.groups.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Batch:
        return Batch(
            sparse=self.sparse.pin_memory(),
            dense=self.dense.pin_memory(),
            labels=self.labels.pin_memory(),
            groups=None if self.groups is None else self.groups.pin_memory(),
        )
