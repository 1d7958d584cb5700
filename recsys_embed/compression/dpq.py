"""Differentiable product quantization, DPQ-VQ (Chen et al., ICML 2020, "Differentiable Product
Quantization for End-to-End Embedding Compression"), with the multi-granular tiers of MGQE (Kang
et al., WWW 2020, "Learning Multi-granular Quantized Embeddings for Large-Vocab Categorical
Features in Recommender Systems"). A vector is ``S`` sub-vectors of width ``w = D / S``, each a
codeword of its own codebook of ``K`` codewords:

    vector(i) = [C[0, c(i, 0)], ..., C[S-1, c(i, S-1)]],      C: [S, K, w],   codes c: [n, S] uint8,

so after training an id costs ``S`` bytes and the table ``n S + 4 K D`` bytes (``K <= 256``).

Training (DPQ-VQ, keys and values shared): every id has a query ``Q[i]`` ``[D]`` (a full table,
uniform in ``[-0.05, 0.05]``); its code in sub-space ``s`` is the nearest codeword, ``c(i, s) =
argmin_k ||Q[i, s] - C[s, k]||``, and the output is that codeword with the straight-through
estimator: the task gradient of the output goes to the query unchanged. A lookup searches each
distinct id of its batch once. The codebook and commitment
losses of VQ, ``||sg(Q) - C[c]||^2 + beta ||Q - sg(C[c])||^2`` averaged over a lookup's ids (those
whose output gets a gradient: padding zeroed by the layout does not count), enter through the same
estimator's backward (their gradients, not a loss term), so a table dropped into any model trains
its codebooks without a loss hook; ``beta`` is the option ``commitment`` (0.25). Codebooks start as
the queries of ``K`` random ids, so every codeword starts in use.

MGQE: ids ``>= F`` (the tail; a fitted vocabulary numbers ids by descending training count, as the
``adaptive`` method relies on: :func:`~recsys_embed.compression.adaptive.frequent_option`) may use
only the first ``K_tail`` codewords of each codebook, the ``F`` frequent ids all ``K``: options
``tail_codewords`` with ``frequent`` or ``frequent_fraction``. Codes stay one byte each, so the
tiers regularize the tail rather than shrink the bytes (a tail code uses ``log2 K_tail`` of its 8 bits).

Serving: :meth:`~ProductQuantized.finalize` (the layout's ``serving_layout()``) stores the codes
of every id and drops the queries; the method then reads codes and codebooks only, gives the same
vectors as before, and saves ``codes`` + ``codebooks`` (safetensors; ``serving: true`` in its config).
Accounting: training holds queries ``[n, D]`` and codebooks, both with Adam moments (more than the
exact table: the budget is for what is served); served, ``memory_bytes() == n S + 4 K D`` and
``num_parameters()`` is that in 4-byte weights.

Budget (bytes ``4 x budget weights``): the ``S`` (a divisor of ``D``) and ``K`` (``<= 256``, or the
option ``codewords``) that fit ``n S + 4 K D`` with the most code bits ``S log2 K``, then the
fewest bytes; the least is ``S = 1`` with ``K = 2``. Options: ``subspaces`` (``S``; or a budget),
``codewords`` (``K``, default 256 or ``n`` if fewer; a given ``K`` above ``n`` warns and is clamped
to ``n``), the MGQE tiers above, ``commitment`` (``beta``), ``serving`` (set by ``finalize``, read
back from a saved state).

Example::

    >>> pq = ProductQuantized.from_options(1000, 16, {}, budget=1600)
    >>> pq.subspaces, pq.codewords, pq.lookup(torch.tensor([3, 999])).shape
    (4, 37, torch.Size([2, 16]))
    >>> pq.finalize(); pq.memory_bytes() == 1000 * 4 + 4 * 37 * 16, sorted(pq.state_dict())
    (True, ['codebooks', 'codes'])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from recsys_embed.compression.adaptive import frequent_option
from recsys_embed.compression.codebooks import MAX_CODEWORDS, gather_codewords, nearest_codewords
from recsys_embed.compression.method import CompressionMethod, MethodConfigError, check_options, check_sizing, option
from recsys_embed.compression.registry import register_compression

INIT_SCALE = 0.05
OPTIONS = ["subspaces", "codewords", "tail_codewords", "frequent", "frequent_fraction", "commitment", "serving"]


def served_bytes(num_ids: int, dim: int, subspaces: int, codewords: int) -> int:
    """Bytes of codes ``[n, S]`` uint8 and fp32 codebooks ``[S, K, D / S]``."""
    return num_ids * subspaces + 4 * codewords * dim


def fit_budget(num_ids: int, dim: int, budget_bytes: int, codewords: int | None, cap: int) -> tuple[int, int]:
    """``(S, K)`` within ``budget_bytes`` with the most code bits ``S log2 K``, then the fewest bytes
    (``K`` fixed when ``codewords`` is given, else up to ``cap``); ``MethodConfigError`` names the least.

    >>> fit_budget(1000, 16, 6400, None, 256), fit_budget(1000, 16, 6400, 16, 256)
    ((4, 37), (4, 16))
    """
    fits = []
    for s in (s for s in range(1, dim + 1) if dim % s == 0):
        k = codewords if codewords is not None else min(cap, (budget_bytes - num_ids * s) // (4 * dim))
        if k >= min(2, cap) and served_bytes(num_ids, dim, s, k) <= budget_bytes:
            fits.append((s * math.log2(k), -served_bytes(num_ids, dim, s, k), s, k))
    if not fits:
        least = served_bytes(num_ids, dim, 1, codewords or min(2, cap))
        raise MethodConfigError(
            f"dpq: {num_ids} ids of dim {dim} need at least {least} bytes ({-(-least // 4)} weights): one uint8 code "
            f"per id and {codewords or min(2, cap)} codewords of dim {dim}; the budget allows {budget_bytes} bytes"
        )
    return max(fits)[2:]


class _StraightThrough(torch.autograd.Function):
    """Forward: the codewords ``[N, D]``. Backward: the output's gradient to the queries, plus the
    gradients of VQ's codebook loss (to the codewords) and commitment loss (to the queries), both
    averaged over the lookups whose output gets a gradient (not the padding slots a layout zeroes)."""

    @staticmethod
    def forward(ctx: Any, queries: torch.Tensor, codewords: torch.Tensor, beta: float) -> torch.Tensor:
        ctx.save_for_backward(queries, codewords)
        ctx.beta = beta
        return codewords.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        queries, codewords = ctx.saved_tensors
        live = grad.ne(0).any(1, keepdim=True)  # padding the layout zeroes out gets no gradient: no VQ loss either
        diff = (queries - codewords) * live * (2 / max(int(live.sum()), 1))
        return grad + ctx.beta * diff, -diff, None


@register_compression("dpq")
class ProductQuantized(CompressionMethod):
    """Codes ``[n, S]`` into ``S`` codebooks of ``K`` codewords, learned end to end (DPQ-VQ); MGQE
    tiers give the tail fewer codewords. Options: ``subspaces`` (or a budget), ``codewords``,
    ``tail_codewords`` with ``frequent`` or ``frequent_fraction``, ``commitment``, ``serving``."""

    description = "DPQ-VQ: uint8 codes into learned product codebooks, MGQE frequency tiers (Chen et al. 2020; Kang et al. 2020)"

    def __init__(self, num_ids: int, dim: int, subspaces: int, codewords: int = MAX_CODEWORDS, tail_codewords: int | None = None,
                 frequent: int = 0, commitment: float = 0.25, serving: bool = False) -> None:  # fmt: skip
        super().__init__(num_ids, dim)
        if subspaces < 1 or dim % subspaces:
            raise MethodConfigError(f"dpq: subspaces must divide dim {dim}, got {subspaces}")
        if not 1 <= codewords <= min(MAX_CODEWORDS, num_ids):
            raise MethodConfigError(f"dpq: codewords must lie in [1, {min(MAX_CODEWORDS, num_ids)}] (uint8 codes, {num_ids} ids), got {codewords}")
        if tail_codewords is not None and not (1 <= tail_codewords <= codewords and 0 <= frequent < num_ids):
            raise MethodConfigError(
                f"dpq: MGQE needs 1 <= tail_codewords <= codewords ({codewords}) and frequent in [0, {num_ids - 1}], "
                f"got {tail_codewords} and {frequent}"
            )
        self.subspaces, self.codewords, self.width = subspaces, codewords, dim // subspaces
        self.tail_codewords, self.frequent, self.commitment, self.serving = tail_codewords, frequent, commitment, serving
        if serving:
            self.register_buffer("codes", torch.zeros(num_ids, subspaces, dtype=torch.uint8))
            self.register_buffer("codebooks", torch.zeros(subspaces, codewords, self.width))
            return
        self.queries = nn.Parameter(torch.empty(num_ids, dim).uniform_(-INIT_SCALE, INIT_SCALE))
        start = self.queries.detach()[torch.randperm(num_ids)[:codewords]]  # [K, D]
        self.codebooks = nn.Parameter(start.view(codewords, subspaces, self.width).transpose(0, 1).contiguous())

    @classmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> ProductQuantized:
        check_options(options, OPTIONS, "dpq")
        check_sizing(options, "subspaces", budget, "dpq")
        codewords = option(options, "codewords", MAX_CODEWORDS, int, "dpq")
        if "codewords" in options and codewords > num_ids:
            warnings.warn(f"dpq: {codewords} codewords for {num_ids} ids; clamped to {num_ids}", stacklevel=2)
        codewords = cap = min(codewords, num_ids)
        tail = options.get("tail_codewords")
        frequent = frequent_option(options, num_ids, "dpq")
        if (tail is None) != (frequent is None):
            raise MethodConfigError(f"dpq: MGQE tiers need both 'tail_codewords' and 'frequent' (or 'frequent_fraction'), got {dict(options)}")
        if tail is not None:
            tail = min(option(options, "tail_codewords", 0, int, "dpq"), num_ids)
        if budget is None:
            subspaces = option(options, "subspaces", 0, int, "dpq")
        else:
            subspaces, codewords = fit_budget(num_ids, dim, 4 * budget, cap if "codewords" in options else None, cap)
            if tail is not None and tail > codewords:
                raise MethodConfigError(f"dpq: tail_codewords {tail} exceed the {codewords} codewords the budget allows; lower it or give 'codewords'")
        return cls(num_ids, dim, subspaces, codewords, tail, frequent or 0, option(options, "commitment", 0.25, float, "dpq"),
                   option(options, "serving", False, bool, "dpq"))  # fmt: skip

    def state_config(self) -> dict[str, Any]:
        tiers = {} if self.tail_codewords is None else {"tail_codewords": self.tail_codewords, "frequent": self.frequent}
        return {"subspaces": self.subspaces, "codewords": self.codewords, **tiers, "commitment": self.commitment, "serving": self.serving}

    def codes_of(self, queries: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``[N, S]`` int64: the nearest codeword of each sub-vector of ``queries`` ``[N, D]`` (ids
        ``[N]`` say the tier: the tail's may not use codewords ``>= K_tail``)."""
        excluded = None
        if self.tail_codewords is not None:
            tail = torch.arange(self.codewords, device=ids.device) >= self.tail_codewords
            excluded = (ids >= self.frequent)[:, None] & tail  # [N, K]
        return nearest_codewords(queries, self.codebooks, excluded)

    def codeword_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """``[N, D]``: the codewords of codes ``[N, S]``, concatenated."""
        return gather_codewords(self.codebooks, codes)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        if self.serving:
            return self.codeword_vectors(self.codes.index_select(0, ids))
        queries = self.queries.index_select(0, ids)
        distinct, inverse = torch.unique(ids, return_inverse=True)  # search each id once: a batch repeats ids
        vectors = self.codeword_vectors(self.codes_of(self.queries.detach().index_select(0, distinct), distinct)[inverse])
        if not (self.training and torch.is_grad_enabled()):
            return vectors
        return _StraightThrough.apply(queries, vectors, self.commitment)

    def finalize(self) -> None:
        """Store every id's codes, drop the queries: from now on the method reads codes and codebooks only."""
        if self.serving:
            return
        with torch.no_grad():
            codes = self.codes_of(self.queries, torch.arange(self.num_ids, device=self.queries.device)).to(torch.uint8)
            books = self.codebooks.detach().clone()
        del self.queries, self.codebooks
        self.register_buffer("codes", codes)
        self.register_buffer("codebooks", books)
        self.serving = True

    def num_parameters(self) -> int:
        """Training: queries and codebooks. Served: codes and codebooks in 4-byte weights, ``ceil(n S / 4) + K D``."""
        return -(-self.codes.numel() // 4) + self.codebooks.numel() if self.serving else super().num_parameters()

    def details(self) -> str:
        tiers = "" if self.tail_codewords is None else f"; ids >= {self.frequent:,} use the first {self.tail_codewords}"
        stored = served_bytes(self.num_ids, self.dim, self.subspaces, self.codewords)
        state = "queries dropped" if self.serving else f"training also holds the queries [{self.num_ids:,}, {self.dim}]"
        return (f"{self.subspaces} codebooks of {self.codewords} codewords of dim {self.width}{tiers}; served: "
                f"{stored:,} bytes of uint8 codes and codebooks ({state})")
