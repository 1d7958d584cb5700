"""The hashing trick (Weinberger et al., ICML 2009): every id hashed into ``M < n`` shared rows,

    vector(i) = W[h(i) mod M],        W: [M, D],

with ``h`` a stable salted 64-bit hash (:func:`recsys_embed.hashing.bucket_torch`: the same row
for the same id in every process and version). Ids that collide share a vector; for ``n`` ids
the expected fraction that shares its row is ``1 - (1 - 1/M)^(n-1)``. The baseline every other
compression method is compared to. Budget: ``M = budget // D`` rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from recsys_embed.compression.kernels import hash_buckets
from recsys_embed.compression.method import CompressionMethod, MethodConfigError, check_options, check_sizing, option
from recsys_embed.compression.registry import register_compression
from recsys_embed.hashing import seed_of
from recsys_embed.tables.accounting import expected_collision_rate


def budget_rows(budget: int | None, row_width: int, options: Mapping[str, Any], where: str, minimum: int = 1) -> int:
    """Rows of ``row_width`` weights a method may keep: ``options["rows"]`` or ``budget // row_width``
    (exactly one of them), at least ``minimum``."""
    check_sizing(options, "rows", budget, where)
    rows = option(options, "rows", 0, int, where) if budget is None else budget // row_width
    if rows < minimum:
        raise MethodConfigError(
            f"{where}: needs at least {minimum} row(s) of {row_width} weights ({minimum * row_width * 4} bytes), "
            f"the {'budget' if budget is not None else 'rows option'} allows {rows}"
        )
    return rows


@register_compression("hashing")
class HashingTrick(CompressionMethod):
    """``[M, D]`` shared rows; id i reads row ``h(i) mod M``. Options: ``rows`` (or a budget), ``salt``."""

    description = "hashing trick: every id hashed into M shared rows (Weinberger et al. 2009)"

    def __init__(self, num_ids: int, dim: int, rows: int, salt: str = "hashing") -> None:
        super().__init__(num_ids, dim)
        self.rows, self.salt, self.seed = rows, salt, seed_of(salt)

    @classmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> HashingTrick:
        check_options(options, ["rows", "salt"], "hashing")
        return cls(num_ids, dim, budget_rows(budget, dim, options, "hashing"), option(options, "salt", "hashing", str, "hashing"))

    def state_config(self) -> dict[str, Any]:
        return {"rows": self.rows, "salt": self.salt}

    def kernel_tables(self) -> list[tuple[int, int]]:
        return [(self.rows, self.dim)]

    def kernel_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return hash_buckets(ids, self.seed, self.rows)[None]

    def combine(self, parts: Sequence[torch.Tensor], ids: torch.Tensor, runs: Sequence[tuple[CompressionMethod, int]]) -> torch.Tensor:
        return parts[0]

    def pools_reads(self) -> bool:
        return True  # one read: the kernel's bag of one row is the vector

    def collision_rate(self) -> float:
        return expected_collision_rate(self.num_ids, self.rows)

    def details(self) -> str:
        return f"{self.rows:,} hashed rows"
