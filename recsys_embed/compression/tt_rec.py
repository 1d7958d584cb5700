"""TT-Rec, tensor-train embeddings (Yin et al., MLSys 2021, "TT-Rec: Tensor Train Matrix
Decomposition for Embedding Tables"): the ``[n, D]`` table is a tensor-train matrix of three
cores, the ids and the dim factorized as ``n <= n1 n2 n3`` and ``D = d1 d2 d3``,

    vector(i)[(a d2 + b) d3 + c] = sum_{r1, r2 < R} G1[i1][a, r1] G2[i2][r1, b, r2] G3[i3][r2, c],

    G1: [n1, d1 R],   G2: [n2, R d2 R],   G3: [n3, R d3],

with ``(i1, i2, i3)`` the mixed-radix digits of ``i`` (``i = (i1 n2 + i2) n3 + i3``). Factors are
chosen close to cube roots (``n1 = ceil(n^(1/3))``, ``n2`` the least with ``n1 n2^2 >= n``,
``n3 = ceil(n / (n1 n2))``; the most balanced ``d1 <= d2 <= d3``); ``D`` must have one (a prime ``D`` gives only ``1 * 1 * D``). Per id: two
matrix products, ``[d1, R] @ [R, d2 R]`` then ``[d1 d2, R] @ [R, d3]``; when a batch holds at
least ``n1 n2`` ids the first is done for every ``(i1, i2)`` pair at once, one GEMM
``[n1 d1, R] @ [R, n2 d2 R]`` (``n1 n2 d1 d2 R`` floats of activations), and gathered per id.

Budget: the largest TT rank ``R`` whose cores fit, ``R (n1 d1 + n3 d3) + R^2 n2 d2 <= budget``;
the least is ``R = 1``, ``n1 d1 + n2 d2 + n3 d3`` weights. Options: ``rank`` (or a budget),
``id_factors``, ``dim_factors`` (both kept in the state so an artifact never depends on how
factors are chosen). Init, the paper's sampled Gaussian: every core entry ``N(0, s^2)`` with
``R^2 s^6 = 0.05^2 / 3``, so a vector entry has the variance of an exact table's
``U(-0.05, 0.05)``.

Pure torch (no device-specific code; tested on CPU), trained by the layout user's dense
optimizer; the paper's maintained CUDA op (facebookresearch's FBTT-Embedding, kept outside
fbgemm) has no CPU kernel.

Example::

    >>> tt = TensorTrain.from_options(1000, 16, {}, budget=1600)
    >>> tt.id_factors, tt.dim_factors, tt.rank, tt.num_parameters() <= 1600
    ([10, 10, 10], [2, 2, 4], 7, True)
    >>> tt.lookup(torch.tensor([0, 999])).shape
    torch.Size([2, 16])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from recsys_embed.compression.method import CompressionMethod, MethodConfigError, check_options, check_sizing, option
from recsys_embed.compression.registry import register_compression

INIT_VARIANCE = 0.05**2 / 3  # of U(-0.05, 0.05), an exact table's start


def id_factors(num_ids: int) -> list[int]:
    """``[n1, n2, n3]`` near cube roots with ``n1 n2 n3 >= n``: ``n1 = ceil(n^(1/3))``, ``n2`` the
    least with ``n1 n2^2 >= n``, ``n3 = ceil(n / (n1 n2))``.

    >>> id_factors(1000), id_factors(100_000), id_factors(2)
    ([10, 10, 10], [47, 47, 46], [2, 1, 1])
    """
    first = max(1, round(num_ids ** (1 / 3)))
    first += (first**3 < num_ids) - ((first - 1) ** 3 >= num_ids)
    second = max(1, math.isqrt(-(-num_ids // first)))
    second += first * second * second < num_ids
    return [first, second, -(-num_ids // (first * second))]


def dim_factors(dim: int) -> list[int]:
    """The most balanced ``d1 <= d2 <= d3`` with ``d1 d2 d3 = D`` (least ``d3``, then least spread).

    >>> dim_factors(16), dim_factors(64), dim_factors(12), dim_factors(7)
    ([2, 2, 4], [4, 4, 4], [2, 2, 3], [1, 1, 7])
    """
    splits = [[a, b, dim // (a * b)] for a in range(1, dim + 1) for b in range(a, dim + 1)
              if dim % (a * b) == 0 and b <= dim // (a * b)]  # fmt: skip
    return min(splits, key=lambda f: (f[2], f[2] - f[0]))


def core_weights(ids: Sequence[int], dims: Sequence[int], rank: int) -> int:
    """Weights of the three cores at TT rank ``rank``: ``R (n1 d1 + n3 d3) + R^2 n2 d2``."""
    return rank * (ids[0] * dims[0] + ids[2] * dims[2]) + rank * rank * ids[1] * dims[1]


def check_factors(num_ids: int, dim: int, ids: Sequence[int], dims: Sequence[int]) -> None:
    """``MethodConfigError`` unless ``ids`` are 3 positive ints with a product ``>= n`` and ``dims`` 3 with the product ``D``."""
    def fits(factors: Sequence[int]) -> bool:
        return len(factors) == 3 and all(isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in factors)

    if not fits(ids) or math.prod(ids) < num_ids:
        raise MethodConfigError(f"tt_rec: id_factors must be 3 positive ints with a product >= {num_ids} (the group's ids), got {ids!r}")
    if not fits(dims) or math.prod(dims) != dim:
        raise MethodConfigError(f"tt_rec: dim_factors must be 3 positive ints with the product {dim} (the dim), got {dims!r}")


@register_compression("tt_rec")
class TensorTrain(CompressionMethod):
    """Three TT cores; id i contracts the rows of its three mixed-radix digits. Options: ``rank``
    (or a budget), ``id_factors``, ``dim_factors``."""

    description = "TT-Rec: the table as a tensor train of three small cores, rank fitted to the budget (Yin et al. 2021)"

    def __init__(self, num_ids: int, dim: int, rank: int, ids: Sequence[int], dims: Sequence[int]) -> None:
        super().__init__(num_ids, dim)
        check_factors(num_ids, dim, ids, dims)
        self.id_factors, self.dim_factors, self.rank = list(ids), list(dims), rank
        if rank < 1:
            raise MethodConfigError(f"tt_rec: rank must be >= 1, got {rank}")
        (n1, n2, n3), (d1, d2, d3), r = self.id_factors, self.dim_factors, self.rank
        std = (INIT_VARIANCE / (r * r)) ** (1 / 6)
        self.core1 = nn.Parameter(torch.randn(n1, d1 * r) * std)
        self.core2 = nn.Parameter(torch.randn(n2, r * d2 * r) * std)
        self.core3 = nn.Parameter(torch.randn(n3, r * d3) * std)

    @classmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> TensorTrain:
        check_options(options, ["rank", "id_factors", "dim_factors"], "tt_rec")
        check_sizing(options, "rank", budget, "tt_rec")
        ids = option(options, "id_factors", id_factors(num_ids), list, "tt_rec")
        dims = option(options, "dim_factors", dim_factors(dim), list, "tt_rec")
        if "dim_factors" not in options and dims[1] == 1:
            raise MethodConfigError(f"tt_rec: dim {dim} does not factor into d1 * d2 * d3 with two factors > 1; use a dim such as 16, 32 or 64")
        check_factors(num_ids, dim, ids, dims)
        if budget is None:
            return cls(num_ids, dim, option(options, "rank", 1, int, "tt_rec"), ids, dims)
        least = core_weights(ids, dims, 1)
        if budget < least:
            raise MethodConfigError(
                f"tt_rec: {num_ids} ids of dim {dim} (ids {ids}, dims {dims}) need at least {least} weights "
                f"({4 * least} bytes) at rank 1, the budget allows {budget}"
            )
        rank = 1
        while core_weights(ids, dims, rank + 1) <= budget:
            rank += 1
        return cls(num_ids, dim, rank, ids, dims)

    def state_config(self) -> dict[str, Any]:
        return {"rank": self.rank, "id_factors": self.id_factors, "dim_factors": self.dim_factors}

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        (n1, n2, n3), (d1, d2, d3), r = self.id_factors, self.dim_factors, self.rank
        pair = ids // n3  # i1 n2 + i2
        # index_select: its backward is one index_add (much faster than advanced indexing's index_put)
        if n1 * n2 <= ids.numel():  # every (i1, i2) pair in one GEMM [n1 d1, R] @ [R, n2 d2 R], then gathered
            middle = self.core2.view(n2, r, d2 * r).transpose(0, 1).reshape(r, n2 * d2 * r)
            pairs = (self.core1.view(n1 * d1, r) @ middle).view(n1, d1, n2, d2 * r).transpose(1, 2)
            left = pairs.reshape(n1 * n2, d1 * d2 * r).index_select(0, pair)
        else:  # per id: [d1, R] @ [R, d2 R]
            first = self.core1.index_select(0, pair // n2).view(-1, d1, r)
            left = torch.bmm(first, self.core2.index_select(0, pair % n2).view(-1, r, d2 * r))
        last = self.core3.index_select(0, ids % n3).view(-1, r, d3)
        return torch.bmm(left.view(-1, d1 * d2, r), last).view(-1, self.dim)

    def details(self) -> str:
        (n1, n2, n3), (d1, d2, d3) = self.id_factors, self.dim_factors
        return f"rank {self.rank}: ids {n1} x {n2} x {n3}, dim {d1} x {d2} x {d3}"
