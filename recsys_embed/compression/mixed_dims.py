"""Mixed dimension embeddings (MDE; Ginart et al., "Mixed dimension embeddings with application to
memory-efficient recommendation systems", ISIT 2021): ids split by frequency into blocks, each
block a table of its own, narrower the rarer its ids, projected up to the model's dim,

    vector(i) = E_b[i - s_b] P_b        for the block b with s_b <= i < s_{b+1},
                E_b: [n_b, d_b] (a kernel table),  P_b: [d_b, D] (dense; none where d_b = D).

Blocks: a fitted vocabulary numbers ids by descending count (``pipelines/fit.py``: 0 missing, 1
out-of-vocabulary, then ``2, 3, ...`` most frequent first), so frequency blocks are id ranges;
``blocks = k`` log-spaced ranges ``s_b = round(n^(b/k))`` (``s_0 = 0``, ``s_k = n``; each block
``n^(1/k)`` times the one before). Ids hashed by the pipeline carry no order: there the blocks
are arbitrary id ranges and MDE only narrows rows. Dims follow the paper's power rule ``d_b ∝
p_b^alpha`` (``alpha`` the temperature; 0: uniform dims). A block's per-id popularity ``p_b`` is
taken as ``1 / n_b`` (DLRM's ``md_solver`` does the same): under a Zipf law ``p(rank) ∝ 1/rank``
log-spaced blocks hold equal mass, so ``p_b ∝ 1/n_b`` exactly. Hence

    d_b = t (n_0 / n_b)^alpha,    rounded to a multiple of 4 (fbgemm) in [4, D].

Budget (weights; tables plus projections): the largest scale ``t`` whose blocks, every id its own
row, fit. A budget below that at 4 weights per id (e.g. 1/10 of a dim-16 table) keeps the
paper's anchor ``t = D`` (the most frequent block at full dim, as ``md_solver(d0=D)``) and hashes
the ids of the rarest block (stable salted hash, :func:`recsys_embed.hashing.bucket_torch`) into
the rows the budget leaves. A budget too small for even that (a small group, whose projections
weigh) takes one block fewer, down to one block of dim ``D``: the hashing trick; below one row of
``D`` weights it is an error stating the minimum. Without a budget, ``blocks`` and ``alpha`` give the anchored dims with no hashing, or ``sizes``, ``dims``
(and ``rows``) give the geometry itself.

In the fused kernel each block is a table; ``kernel_rows`` gives ``-1`` in every block but the
id's own (the layout reads nothing there: zeros), so ``combine`` sums ``sum_b part_b P_b`` with
one matmul over the projected blocks. The projections start uniform with variance ``1 / d_b``
(a projected row has the scale of an exact one) and are trained by the dense optimizer.

Example::

    >>> method = MixedDimensions.from_options(2000, 16, {"blocks": 4, "alpha": 0.3}, budget=None)
    >>> method.sizes, method.dims, method.rows
    ([7, 38, 254, 1701], [16, 8, 4, 4], [7, 38, 254, 1701])
    >>> method.kernel_rows(torch.tensor([0, 10, 1999])).tolist()
    [[0, -1, -1], [-1, 3, -1], [-1, -1, -1], [-1, -1, 1700]]
    >>> small = MixedDimensions.from_options(2000, 16, {}, budget=3200)
    >>> small.dims, small.rows, small.num_parameters() + sum(r * d for r, d in small.kernel_tables()) <= 3200
    ([16, 8, 4, 4], [7, 38, 254, 378], True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from recsys_embed.compression.kernels import hash_buckets
from recsys_embed.compression.method import CompressionMethod, MethodConfigError, check_options, option
from recsys_embed.compression.registry import register_compression
from recsys_embed.hashing import seed_of
from recsys_embed.tables.accounting import expected_collision_rate

WHERE = "mixed_dims"
STEP = 4  # fbgemm's rows are multiples of 4 floats


def block_sizes(num_ids: int, blocks: int) -> list[int]:
    """Ids per block: ``blocks`` log-spaced ranges ``[round(n^(b/k)), round(n^((b+1)/k)))`` (empty ones merged).

    >>> block_sizes(100_000, 4), block_sizes(2, 4)
    ([18, 298, 5307, 94377], [1, 1])
    """
    bounds = sorted({0, num_ids, *(round(num_ids ** (b / blocks)) for b in range(1, blocks))})
    return [b - a for a, b in zip(bounds, bounds[1:])]


def rule_dims(sizes: Sequence[int], dim: int, alpha: float, scale: float) -> list[int]:
    """``d_b = scale (n_0 / n_b)^alpha`` rounded to a multiple of 4 in ``[4, dim]``."""
    return [min(dim, max(STEP, STEP * math.floor(scale * (sizes[0] / n) ** alpha / STEP + 0.5))) for n in sizes]


def weights(sizes: Sequence[int], dims: Sequence[int], rows: Sequence[int], dim: int) -> int:
    """Weights of block tables ``rows_b x d_b`` plus the projections ``d_b x dim`` of blocks narrower than ``dim``."""
    return sum(r * d + (d * dim if d != dim else 0) for r, d in zip(rows, dims))


def fit_budget(num_ids: int, dim: int, blocks: int, alpha: float, budget: int) -> tuple[list[int], list[int], list[int]]:
    """``(sizes, dims, rows)`` within ``budget`` weights (module docstring: largest scale, else a hashed rarest block)."""
    sizes = block_sizes(num_ids, blocks)
    ratios = [(sizes[0] / n) ** alpha for n in sizes]
    # every scale at which some block's rounded dim changes, largest first
    scales = sorted({(m - STEP / 2) / r for r in ratios for m in range(2 * STEP, dim + 1, STEP)} | {0.0}, reverse=True)
    for scale in scales:
        dims = rule_dims(sizes, dim, alpha, scale + 1e-9)
        if weights(sizes, dims, sizes, dim) <= budget:
            return sizes, dims, sizes
    dims = rule_dims(sizes, dim, alpha, dim)
    rest = weights(sizes[:-1], dims[:-1], sizes[:-1], dim) + (dims[-1] * dim if dims[-1] != dim else 0)
    tail = (budget - rest) // dims[-1]
    if tail < 1:
        raise MethodConfigError(
            f"{WHERE}: blocks {sizes} of dims {dims} (alpha {alpha}) need at least {rest + dims[-1]} weights "
            f"({4 * (rest + dims[-1])} bytes: every block but the rarest whole, projections, 1 hashed row), "
            f"the budget allows {budget}"
        )
    return sizes, dims, [*sizes[:-1], min(tail, sizes[-1])]


@register_compression("mixed_dims")
class MixedDimensions(CompressionMethod):
    """Frequency blocks of decreasing dims, each a kernel table, projected up to ``dim``.
    Options: ``blocks`` (4), ``alpha`` (0.3) with or without a budget, or ``sizes``, ``dims``, ``rows``; ``salt``."""

    description = "mixed dimensions: frequency blocks with smaller dims projected up (Ginart et al. 2021)"

    def __init__(
        self, num_ids: int, dim: int, sizes: Sequence[int], dims: Sequence[int], rows: Sequence[int] | None = None, salt: str = WHERE
    ) -> None:
        super().__init__(num_ids, dim)
        rows = list(sizes if rows is None else rows)
        if not (len(sizes) == len(dims) == len(rows) >= 1) or sum(sizes) != num_ids or min(sizes) < 1:
            raise MethodConfigError(
                f"{WHERE}: sizes, dims and rows need one entry per block, sizes >= 1 summing to the group's {num_ids} ids; "
                f"got sizes {list(sizes)}, dims {list(dims)}, rows {rows}"
            )
        if any(d % STEP or not STEP <= d <= dim for d in dims):
            raise MethodConfigError(f"{WHERE}: block dims must be multiples of 4 in [4, {dim}], got {list(dims)}")
        if any(not 1 <= r <= n for r, n in zip(rows, sizes)):
            raise MethodConfigError(f"{WHERE}: block rows must lie in [1, block size] (sizes {list(sizes)}), got {rows}")
        self.sizes, self.dims, self.rows, self.salt, self.seed = list(sizes), list(dims), rows, salt, seed_of(salt)
        starts = [0, *torch.tensor(self.sizes).cumsum(0).tolist()[:-1]]
        self.register_buffer("starts", torch.tensor(starts), persistent=False)
        self.hashed = [b for b, (r, n) in enumerate(zip(rows, sizes)) if r < n]
        self.projected = [b for b, d in enumerate(self.dims) if d != dim]
        self.full = [b for b, d in enumerate(self.dims) if d == dim]
        self.projections = nn.ParameterList(
            nn.Parameter(torch.empty(self.dims[b], dim).uniform_(-math.sqrt(3 / self.dims[b]), math.sqrt(3 / self.dims[b])))
            for b in self.projected
        )

    @classmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> MixedDimensions:
        check_options(options, ["blocks", "alpha", "sizes", "dims", "rows", "salt"], WHERE)
        salt = option(options, "salt", WHERE, str, WHERE)
        explicit = [k for k in ("sizes", "dims", "rows") if k in options]
        if explicit:
            if budget is not None or "blocks" in options or "alpha" in options or "sizes" not in options or "dims" not in options:
                raise MethodConfigError(
                    f"{WHERE}: 'sizes' and 'dims' (and 'rows') give the geometry alone, without 'budget', 'blocks' or 'alpha'; "
                    f"got options {dict(options)} and budget {budget}"
                )
            sizes, dims, rows = (option(options, k, None, list, WHERE) if k in options else None for k in ("sizes", "dims", "rows"))
            return cls(num_ids, dim, sizes, dims, rows, salt)  # type: ignore[arg-type]
        blocks = option(options, "blocks", 4, int, WHERE)
        alpha = option(options, "alpha", 0.3, float, WHERE)
        if blocks < 1 or alpha < 0:
            raise MethodConfigError(f"{WHERE}: needs blocks >= 1 and alpha >= 0, got blocks={blocks}, alpha={alpha}")
        if dim % STEP:
            raise MethodConfigError(f"{WHERE}: dim {dim} is not a multiple of 4 (fbgemm's rows)")
        if budget is None:
            sizes = block_sizes(num_ids, blocks)
            return cls(num_ids, dim, sizes, rule_dims(sizes, dim, alpha, dim), None, salt)
        for fewer in range(blocks, 1, -1):  # fewer blocks while the budget cannot hold them
            try:
                return cls(num_ids, dim, *fit_budget(num_ids, dim, fewer, alpha, budget), salt)
            except MethodConfigError:
                pass
        return cls(num_ids, dim, *fit_budget(num_ids, dim, 1, alpha, budget), salt)

    def state_config(self) -> dict[str, Any]:
        return {"sizes": self.sizes, "dims": self.dims, "rows": self.rows, "salt": self.salt}

    def kernel_tables(self) -> list[tuple[int, int]]:
        return list(zip(self.rows, self.dims))

    def kernel_rows(self, ids: torch.Tensor) -> torch.Tensor:
        block = torch.bucketize(ids, self.starts[1:], right=True)  # [N], s_b <= id < s_{b+1}
        local = ids - self.starts[block]
        for b in self.hashed:
            local = torch.where(block == b, hash_buckets(ids, self.seed, self.rows[b]), local)
        return torch.full((len(self.sizes), ids.numel()), -1, dtype=torch.int64, device=ids.device).scatter_(0, block[None], local[None])

    def combine(self, parts: Sequence[torch.Tensor], ids: torch.Tensor, runs: Sequence[tuple[CompressionMethod, int]]) -> torch.Tensor:
        out = sum(parts[b] for b in self.full) if self.full else 0
        if self.projected:
            out = out + torch.cat([parts[b] for b in self.projected], dim=-1) @ torch.cat(list(self.projections))
        return out  # type: ignore[return-value]

    def collision_rate(self) -> float | None:
        if not self.hashed:
            return None
        return sum(self.sizes[b] / self.num_ids * expected_collision_rate(self.sizes[b], self.rows[b]) for b in self.hashed)

    def details(self) -> str:
        blocks = [f"{n:,} ids" + (f" in {r:,} hashed rows" if r < n else "") + f" x {d}" for n, r, d in zip(self.sizes, self.rows, self.dims)]
        return f"blocks {', '.join(blocks)}; projections {', '.join(f'{self.dims[b]}x{self.dim}' for b in self.projected) or 'none'}"
