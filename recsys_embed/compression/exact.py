"""The exact table: one row per id, ``vector(i) = W[i]``, ``W`` ``[n, D]`` in the fused kernel.

The uncompressed baseline every method's compression ratio is measured against; groups a
compression config does not name keep it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from recsys_embed.compression.method import CompressionMethod, check_options
from recsys_embed.compression.registry import register_compression


@register_compression("exact")
class ExactTable(CompressionMethod):
    """``[n, D]`` rows, id i reads row i (no compression; ``budget`` is ignored)."""

    description = "one row per id, no compression (the baseline)"

    @classmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> ExactTable:
        check_options(options, [], "exact")
        return cls(num_ids, dim)

    def state_config(self) -> dict[str, Any]:
        return {}

    def kernel_tables(self) -> list[tuple[int, int]]:
        return [(self.num_ids, self.dim)]

    def kernel_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return ids[None]

    def combine(self, parts: Sequence[torch.Tensor], ids: torch.Tensor, runs: Sequence[tuple[CompressionMethod, int]]) -> torch.Tensor:
        return parts[0]

    def pools_reads(self) -> bool:
        return True  # one read: the kernel's bag of one row is the vector

    def details(self) -> str:
        return f"{self.num_ids:,} rows"
