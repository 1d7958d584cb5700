"""ROBE-Z, random offset block embedding (Desai et al., MLSys 2022, "Random Offset Block Embedding
(ROBE) for compressed embedding tables in deep learning recommendation systems"): every vector
is read, ``Z`` contiguous weights at a time, from ONE shared circular array,

    vector(x)[j Z + t] = g(x, j) * A[(h(x, j) + t) mod S],     j < D / Z,  t < Z,  A: [S],

with ``h(x, j)`` the offset of chunk ``j`` of id ``x`` in ``[0, S)`` and ``g(x, j)`` in
``{-1, +1}`` its sign, both from one stable salted 64-bit hash ``H`` of the key ``x * D/Z + j``
(:func:`recsys_embed.hashing.bucket_torch`): ``H mod 2S = h + S [g = -1]``. The signs make
colliding chunks cancel in expectation rather than add up. ``Z = 1`` is per-weight feature
hashing, ``Z = D`` the hashing trick over a shared array; a chunk is read contiguously (one
cache line for ``Z = 16``), which is ROBE's speed-up over per-weight hashing. Chunks overlap
freely: the array has no rows, and an id's vector is its own unless each of its ``D / Z``
chunks lands at the same offset with the same sign as another id's (``(2S)^(-D/Z)`` a pair:
:meth:`~RandomOffsetBlock.collision_rate`).

Budget: ``S = budget`` weights (or the ``size`` option); the least is one chunk, ``S >= Z``.
Options: ``chunk`` (``Z``, divides ``D``; default the largest divisor of ``D`` up to 8, i.e.
at least two chunks for ``D >= 16``), ``salt``. The array starts uniform in ``[-0.05, 0.05]``
like an exact table.

Gradients are dense (``A.grad`` ``[S]``, trained by the layout user's Adam): measured against
sparse gradients (an embedding-bag gather with ``sparse=True`` and ``SparseAdam``) in
``benchmarks/robe_gradients.py``, dense is 4.2x faster at the tables benchmark's shape (26 groups
of 100k ids x 16 at 1/10, batch 4096, one thread): an ``index_add`` into ``[S]`` and a fused Adam
step beat coalescing a sparse gradient.

Example::

    >>> robe = RandomOffsetBlock.from_options(1000, 16, {"chunk": 4}, budget=1600)
    >>> robe.lookup(torch.tensor([3, 999])).shape, robe.num_parameters(), robe.details()
    (torch.Size([2, 16]), 1600, 'shared array of 1,600 weights, 4 chunks of 4 per vector')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from recsys_embed.compression.kernels import hash_buckets
from recsys_embed.compression.method import CompressionMethod, MethodConfigError, check_options, check_sizing, option
from recsys_embed.compression.registry import register_compression
from recsys_embed.hashing import seed_of
from recsys_embed.tables.accounting import expected_collision_rate

INIT_SCALE = 0.05


def default_chunk(dim: int) -> int:
    """The largest divisor of ``dim`` that is at most 8.

    >>> default_chunk(16), default_chunk(12), default_chunk(7)
    (8, 6, 7)
    """
    return max(z for z in range(1, min(dim, 8) + 1) if dim % z == 0)


@register_compression("robe")
class RandomOffsetBlock(CompressionMethod):
    """One shared array ``[S]``; chunk j of id x is ``Z`` weights at a hashed offset with a hashed
    sign. Options: ``size`` (``S``; or a budget), ``chunk`` (``Z``), ``salt``."""

    description = "ROBE-Z: vectors read in hashed chunks from one shared circular array (Desai et al. 2022)"

    def __init__(self, num_ids: int, dim: int, size: int, chunk: int, salt: str = "robe") -> None:
        super().__init__(num_ids, dim)
        if chunk < 1 or dim % chunk:
            raise MethodConfigError(f"robe: chunk (Z) must divide dim {dim}, got {chunk}")
        if size < chunk:
            raise MethodConfigError(f"robe: size must hold at least one chunk of {chunk} weights ({4 * chunk} bytes), got {size}")
        self.size, self.chunk, self.chunks, self.salt = size, chunk, dim // chunk, salt
        self.seed = seed_of(salt)
        self.array = nn.Parameter(torch.empty(size).uniform_(-INIT_SCALE, INIT_SCALE))
        self.register_buffer("_within", torch.arange(chunk), persistent=False)

    @classmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> RandomOffsetBlock:
        check_options(options, ["size", "chunk", "salt"], "robe")
        check_sizing(options, "size", budget, "robe")
        chunk = option(options, "chunk", default_chunk(dim), int, "robe")
        size = option(options, "size", 0, int, "robe") if budget is None else budget
        if budget is not None and size < chunk:
            raise MethodConfigError(
                f"robe: needs at least one chunk of {chunk} weights ({4 * chunk} bytes), the budget allows {budget} weights"
            )
        return cls(num_ids, dim, size, chunk, option(options, "salt", "robe", str, "robe"))

    def state_config(self) -> dict[str, Any]:
        return {"size": self.size, "chunk": self.chunk, "salt": self.salt}

    def positions(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(index [N * D], sign [N, D / Z, 1])``: where each weight of each id's vector is read, and each chunk's sign."""
        keys = ids[:, None] * self.chunks + torch.arange(self.chunks, device=ids.device)  # [N, D/Z]
        hashed = hash_buckets(keys, self.seed, 2 * self.size)  # h + S [g < 0]
        signs = 1 - 2 * (hashed >= self.size).to(self.array.dtype)
        index = (hashed[..., None] + self._within) % self.size  # [N, D/Z, Z]
        return index.view(-1), signs[..., None]

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        index, signs = self.positions(ids)
        # index_select: its backward is one index_add (4x faster than advanced indexing's index_put)
        return (self.array.index_select(0, index).view(-1, self.chunks, self.chunk) * signs).view(-1, self.dim)

    def collision_rate(self) -> float:
        """Expected fraction of ids whose whole vector is another id's: ``1 - (1 - (2S)^(-D/Z))^(n-1)``."""
        return expected_collision_rate(self.num_ids, min((2 * self.size) ** self.chunks, 2**1000))  # 2^1000: float range

    def details(self) -> str:
        return f"shared array of {self.size:,} weights, {self.chunks} chunks of {self.chunk} per vector"
