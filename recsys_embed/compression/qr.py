"""Quotient-remainder (compositional) embeddings (Shi et al., KDD 2020): two small tables whose
rows every id combines uniquely,

    vector(i) = Q[i // m]  (*)  R[i mod m],      Q: [ceil(n / m), D_q],  R: [m, D_r],

with ``(*)`` the element-wise product (``mult``, the paper's default; ``D_q = D_r = D``), the sum
(``add``) or the concatenation (``concat``; ``D_q + D_r = D``). No two ids share both rows, so
every id keeps a distinct vector with ``m + ceil(n / m)`` rows instead of ``n``. The combination
is per id: DLRM's ``qr_embedding_bag`` pools each table before combining, which equals this
only for one-id bags.

Budget: the largest ``m`` with ``m + ceil(n / m)`` rows within it; the fewest rows any ``m``
gives is about ``2 sqrt(n)``, less is a clear error.

Storage. ``add`` and ``concat``: both tables in the fused kernel (``add`` reads an id's two rows
as one bag the kernel sums). ``mult``: the remainder table in the fused kernel, one read per id
like an exact table; the quotient table (``ceil(n / m)`` rows: about ``1 / budget`` of them at a
budget) is a dense parameter that the dense optimizer trains, applied to the kernel's rows by
:func:`~recsys_embed.compression.kernels.row_product` (one pass each way). At the tables
benchmark's shape a second kernel read per id would cost 0.4-0.5x an exact table's step, the
row product costs about 0.15x (``benchmarks/tables.py``). The quotient rows start near 1
(``1 + U(-0.05, 0.05)``) so the product starts as small as an exact table's rows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from recsys_embed.compression.method import CompressionMethod, MethodConfigError, check_options, check_sizing, option
from recsys_embed.compression.registry import register_compression
from recsys_embed.compression.kernels import row_product

COMBINES = ("mult", "add", "concat")
QUOTIENT_INIT = 0.05  # mult: quotient rows start uniform in [1 - QUOTIENT_INIT, 1 + QUOTIENT_INIT]


def fewest_rows(num_ids: int) -> int:
    """``min over m`` of ``m + ceil(n / m)``: the smallest QR pair of tables for ``n`` ids.

    >>> fewest_rows(100), fewest_rows(101), fewest_rows(1)
    (20, 21, 2)
    """
    root = math.isqrt(num_ids)
    return min(m + -(-num_ids // m) for m in range(max(1, root - 1), root + 3))


def remainder_rows(num_ids: int, rows: int) -> int:
    """The largest ``m <= n`` with ``m + ceil(n / m) <= rows`` (``rows >= fewest_rows(n)``).

    >>> remainder_rows(100_000, 10_000), remainder_rows(100, 20)
    (9989, 10)
    """
    m = min(num_ids, rows - 1)
    while m + -(-num_ids // m) > rows:
        m -= max(1, m + -(-num_ids // m) - rows)
    return m


@register_compression("qr")
class QuotientRemainder(CompressionMethod):
    """Quotient and remainder tables (``mult``: the quotient table dense, see the module docstring).
    Options: ``combine`` (``mult``, ``add``, ``concat``), ``remainder`` (``m``; or a budget)."""

    description = "quotient-remainder: two small tables, combined per id (Shi et al. 2020)"

    def __init__(self, num_ids: int, dim: int, remainder: int, combine: str = "mult") -> None:
        super().__init__(num_ids, dim)
        if combine not in COMBINES:
            raise MethodConfigError(f"qr: combine must be one of {list(COMBINES)}, got {combine!r}")
        if not 1 <= remainder <= num_ids:
            raise MethodConfigError(f"qr: remainder must lie in [1, {num_ids}] (the group's ids), got {remainder}")
        if combine == "concat" and dim % 8:
            raise MethodConfigError(f"qr: combine 'concat' splits dim {dim} in two halves of multiples of 4; use a dim divisible by 8")
        self.combine_mode, self.remainder = combine, remainder
        self.quotients = -(-num_ids // remainder)
        width = dim // 2 if combine == "concat" else dim
        self.widths = (width, dim - width if combine == "concat" else dim)
        if combine == "mult":
            self.quotient = nn.Parameter(torch.empty(self.quotients, dim).uniform_(1 - QUOTIENT_INIT, 1 + QUOTIENT_INIT))

    @classmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> QuotientRemainder:
        check_options(options, ["combine", "remainder"], "qr")
        combine = option(options, "combine", "mult", str, "qr")
        check_sizing(options, "remainder", budget, "qr")
        if budget is None:
            return cls(num_ids, dim, option(options, "remainder", 1, int, "qr"), combine)
        rows, least = budget // (dim // 2 if combine == "concat" else dim), fewest_rows(num_ids)
        if rows < least:
            raise MethodConfigError(
                f"qr: {num_ids} ids need at least {least} rows (m + ceil(n/m), at m = {math.isqrt(num_ids)}), "
                f"the budget allows {rows} rows of dim {dim // 2 if combine == 'concat' else dim}"
            )
        return cls(num_ids, dim, remainder_rows(num_ids, rows), combine)

    def state_config(self) -> dict[str, Any]:
        return {"combine": self.combine_mode, "remainder": self.remainder}

    def kernel_tables(self) -> list[tuple[int, int]]:
        """``mult``: the remainder table; ``add``, ``concat``: the quotient and the remainder table."""
        remainders = [(self.remainder, self.widths[1])]
        return remainders if self.combine_mode == "mult" else [(self.quotients, self.widths[0]), *remainders]

    def kernel_rows(self, ids: torch.Tensor) -> torch.Tensor:
        if self.combine_mode == "mult":
            return torch.remainder(ids, self.remainder)[None]
        rows = torch.empty((2, ids.numel()), dtype=torch.int64, device=ids.device)  # no stack: written in place
        torch.floor_divide(ids, self.remainder, out=rows[0])
        torch.remainder(ids, self.remainder, out=rows[1])
        return rows

    def combine(self, parts: Sequence[torch.Tensor], ids: torch.Tensor, runs: Sequence[tuple[CompressionMethod, int]]) -> torch.Tensor:
        """``mult``: the remainder rows times the quotient rows of ``ids // m``, for every group of
        ``runs`` at once (their quotient tables side by side); ``add``: the sum (when not pooled);
        ``concat``: the two halves."""
        if self.combine_mode == "add":
            return parts[0] + parts[1]
        if self.combine_mode == "concat":
            return torch.cat(list(parts), dim=-1)
        rows = parts[0] if parts[0].dim() == 3 else parts[0].unsqueeze(1)  # [B, P, D]
        grid = ids if ids.dim() == 2 else ids.unsqueeze(1)  # [B, P]
        methods = list(dict.fromkeys(m for m, _ in runs))
        if len(methods) == 1:
            index, table = torch.div(grid, self.remainder, rounding_mode="floor"), self.quotient
        else:
            first = dict(zip(methods, itertools.accumulate((m.quotients for m in methods), initial=0)))
            divisors = torch.tensor([m.remainder for m, p in runs for _ in range(p)], device=grid.device)  # type: ignore[attr-defined]
            starts = torch.tensor([first[m] for m, p in runs for _ in range(p)], device=grid.device)
            index, table = torch.div(grid, divisors, rounding_mode="floor") + starts, torch.cat([m.quotient for m in methods])  # type: ignore[misc]
        return row_product(rows, table, index).view(parts[0].shape)

    def pools_reads(self) -> bool:
        """``add``: the kernel sums the two rows of an id in one bag (no combine)."""
        return self.combine_mode == "add"

    def combine_key(self) -> tuple[str, str]:
        """``mult``, ``concat``: one product (concatenation) over the slots of every QR group alike."""
        return ("qr", self.combine_mode)

    def supports_prefix(self, dim: int) -> bool:
        """``concat``: a prefix within the quotient half is shared by ``m`` ids at a time: no."""
        return self.combine_mode != "concat" or dim > self.widths[0]

    def details(self) -> str:
        dense = " (dense)" if self.combine_mode == "mult" else ""
        return f"{self.combine_mode}: quotient {self.quotients:,} x {self.widths[0]}{dense}, remainder {self.remainder:,} x {self.widths[1]}"
