"""Quotient-remainder (compositional) embeddings (Shi et al., KDD 2020): two small tables whose
rows every id combines uniquely,

    vector(i) = Q[i // m]  (*)  R[i mod m],      Q: [ceil(n / m), D_q],  R: [m, D_r],

with ``(*)`` the element-wise product (``mult``, the paper's default; ``D_q = D_r = D``), the sum
(``add``) or the concatenation (``concat``; ``D_q + D_r = D``). No two ids share both rows, so
every id keeps a distinct vector with ``m + ceil(n / m)`` rows instead of ``n``. The combination
is per id: DLRM's ``qr_embedding_bag`` pools each table before combining, which equals this
only for one-id bags.

Budget: the largest ``m`` with ``m + ceil(n / m)`` rows within it; the fewest rows any ``m``
gives is about ``2 sqrt(n)``, less is a clear error. With ``mult`` the quotient table starts
near 1 (``1 + U(-s, s)``) so the product starts as small as an exact table's rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from recsys_embed.compression.method import CompressionMethod, MethodConfigError, check_options, check_sizing, option
from recsys_embed.compression.registry import register_compression

COMBINES = ("mult", "add", "concat")


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


class _Product(torch.autograd.Function):
    """``a * b`` whose backward writes both gradients side by side in one buffer ``[B, 2, ...]``."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = ctx.saved_tensors
        both = grad.new_empty((grad.shape[0], 2, *grad.shape[1:]))
        torch.mul(grad, b, out=both[:, 0])
        torch.mul(grad, a, out=both[:, 1])
        return both[:, 0], both[:, 1]


def side_by_side_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a * b`` (same shapes ``[B, ...]``). With gradients, the gradients of ``a`` and ``b`` come out
    as the two halves of each row of one buffer: the layout reads a combine unit's quotients and
    remainders as consecutive column blocks of the kernel's output, so they reach the kernel as one
    tensor, without the copy that joining two separate gradients would take (about 1/8 of a step
    at the benchmark's shape).

    >>> a, b = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    >>> side_by_side_product(a, b).sum().backward()
    >>> torch.equal(a.grad, b.detach()), torch.equal(b.grad, a.detach())
    (True, True)
    """
    if a.shape != b.shape or not (a.requires_grad or b.requires_grad) or a.dim() < 1:
        return a * b
    return _Product.apply(a, b)


@register_compression("qr")
class QuotientRemainder(CompressionMethod):
    """Quotient and remainder tables in the fused kernel. Options: ``combine`` (``mult``, ``add``,
    ``concat``), ``remainder`` (``m``; or a budget)."""

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
        return [(self.quotients, self.widths[0]), (self.remainder, self.widths[1])]

    def kernel_rows(self, ids: torch.Tensor) -> torch.Tensor:
        rows = torch.empty((2, ids.numel()), dtype=torch.int64, device=ids.device)  # no stack: written in place
        torch.floor_divide(ids, self.remainder, out=rows[0])
        torch.remainder(ids, self.remainder, out=rows[1])
        return rows

    def combine(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        quotient, remainder = parts
        if self.combine_mode == "mult":
            return side_by_side_product(quotient, remainder)
        if self.combine_mode == "add":
            return quotient + remainder
        return torch.cat([quotient, remainder], dim=-1)

    def pools_reads(self) -> bool:
        """``add``: the kernel sums the two rows of an id in one bag (no combine)."""
        return self.combine_mode == "add"

    def combine_key(self) -> tuple[str, str]:
        """``mult``, ``concat``: one product (concatenation) over the slots of every QR group alike."""
        return ("qr", self.combine_mode)

    def supports_prefix(self, dim: int) -> bool:
        """``concat``: a prefix within the quotient half is shared by ``m`` ids at a time: no."""
        return self.combine_mode != "concat" or dim > self.widths[0]

    def initialize(self, table: int, weight: torch.Tensor) -> None:
        if table == 0 and self.combine_mode == "mult":
            weight.add_(1.0)

    def details(self) -> str:
        return f"{self.combine_mode}: quotient {self.quotients:,} x {self.widths[0]}, remainder {self.remainder:,} x {self.widths[1]}"
