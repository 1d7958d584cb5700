"""Double hashing (Zhang et al., "Model size reduction using frequency based double hashing for
recommender systems", RecSys 2020): two independent stable salted hashes into two tables,

    vector(i) = W1[h1(i) mod M1]  (+)  W2[h2(i) mod M2],      W1: [M1, D_1],  W2: [M2, D_2],

with ``(+)`` the sum (``sum``, ``D_1 = D_2 = D``) or the concatenation (``concat``, ``D_1 = D_2 =
D / 2``: ``D`` divisible by 8, fbgemm needs rows of multiples of 4). ``h1``, ``h2`` are the high
and the low 32 bits of one stable salted 64-bit hash (:func:`recsys_embed.hashing.hash_int_torch`,
SplitMix64 of ``i ^ seed(salt)``): two independent 32-bit hashes for the price of one, which
matters on the training hot path (``M1, M2 < 2^31``; the modulo bias, ``M / 2^32``, is
negligible). Two ids share their vector only if both hashes collide: the pairs ``(h1, h2)`` fall uniformly on
``M1 M2`` cells, so the expected fraction of the ``n`` ids whose PAIR of rows is shared with
another id is

    1 - (1 - 1 / (M1 M2))^(n - 1)

(:meth:`DoubleHashing.collision_rate`), against ``1 - (1 - 1/M)^(n-1)`` of the hashing trick with
``M = M1 + M2`` rows; each single row is still shared, so colliding ids' vectors stay correlated.
The paper's frequency-based variant keeps the most frequent ids exact and double-hashes the
rest; method ``adaptive`` is that hybrid with one hash on the tail.

Budget: ``M1 + M2 = budget // D_1`` rows (``rows`` names it directly), split in halves
(``M1 = ceil``, ``M2 = floor``); at least 2 rows.

Example::

    >>> method = DoubleHashing.from_options(1000, 16, {"combine": "concat"}, budget=1600)
    >>> method.kernel_tables(), method.kernel_rows(torch.tensor([0, 1, 999])).shape
    ([(100, 8), (100, 8)], torch.Size([2, 3]))
    >>> round(method.collision_rate(), 4)
    0.0951
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from recsys_embed.compression.hashing import budget_rows
from recsys_embed.compression.kernels import double_hash_rows
from recsys_embed.compression.method import CompressionMethod, MethodConfigError, check_options, option
from recsys_embed.compression.registry import register_compression
from recsys_embed.hashing import seed_of
from recsys_embed.tables.accounting import expected_collision_rate

COMBINES = ("sum", "concat")
MAX_ROWS = 2**31 - 1  # each table's rows index by 32 bits of the hash


@register_compression("double_hashing")
class DoubleHashing(CompressionMethod):
    """Two tables of ``rows`` rows in all, each id reads one row of each by an independent hash.
    Options: ``combine`` (``sum``, ``concat``), ``rows`` (or a budget), ``salt``."""

    description = "double hashing: two independent hashes into two tables, summed or concatenated (Zhang et al. 2020)"

    def __init__(self, num_ids: int, dim: int, rows: int, combine: str = "sum", salt: str = "double_hashing") -> None:
        super().__init__(num_ids, dim)
        if combine not in COMBINES:
            raise MethodConfigError(f"double_hashing: combine must be one of {list(COMBINES)}, got {combine!r}")
        if combine == "concat" and dim % 8:
            raise MethodConfigError(f"double_hashing: combine 'concat' splits dim {dim} in two halves of multiples of 4; use a dim divisible by 8")
        if not 2 <= rows <= 2 * MAX_ROWS:
            raise MethodConfigError(f"double_hashing: needs 2 to {2 * MAX_ROWS} rows (at least one per table), got {rows}")
        self.rows, self.combine_mode, self.salt, self.seed = rows, combine, salt, seed_of(salt)
        self.table_rows = (rows - rows // 2, rows // 2)
        self.width = dim // 2 if combine == "concat" else dim

    @classmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> DoubleHashing:
        where = "double_hashing"
        check_options(options, ["rows", "combine", "salt"], where)
        combine = option(options, "combine", "sum", str, where)
        width = dim // 2 if combine == "concat" else dim
        rows = budget_rows(budget, width, options, where, minimum=2)
        return cls(num_ids, dim, rows, combine, option(options, "salt", where, str, where))

    def state_config(self) -> dict[str, Any]:
        return {"rows": self.rows, "combine": self.combine_mode, "salt": self.salt}

    def kernel_tables(self) -> list[tuple[int, int]]:
        return [(rows, self.width) for rows in self.table_rows]

    def kernel_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return double_hash_rows(ids, self.seed, *self.table_rows)

    def combine(self, parts: Sequence[torch.Tensor], ids: torch.Tensor, runs: Sequence[tuple[CompressionMethod, int]]) -> torch.Tensor:
        first, second = parts
        return first + second if self.combine_mode == "sum" else torch.cat([first, second], dim=-1)

    def pools_reads(self) -> bool:
        """``sum``: the kernel sums the two rows of an id in one bag (no combine)."""
        return self.combine_mode == "sum"

    def combine_key(self) -> tuple[str, str]:
        return ("double_hashing", self.combine_mode)

    def supports_prefix(self, dim: int) -> bool:
        """``concat``: a prefix within the first half is the hashing trick with ``M1`` rows, not the pair: no."""
        return self.combine_mode != "concat" or dim > self.width

    def collision_rate(self) -> float:
        return expected_collision_rate(self.num_ids, self.table_rows[0] * self.table_rows[1])

    def details(self) -> str:
        return f"{self.combine_mode}: {self.table_rows[0]:,} + {self.table_rows[1]:,} hashed rows x {self.width}"
