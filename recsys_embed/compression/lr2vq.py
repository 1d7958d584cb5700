"""Low-rank representation vector quantization, after LR²VQ (Zhu, Zhou and Zhong, "Learning Low-Rank
Representations for Model Compression", arXiv 2211.11397, 2022): each id's vector is decoded from
``m`` one-byte codes into ``K`` codewords of a low-rank representation,

    vector(i) = P^T q(z_i),     z_i in R^r,  P: [r, D],  r <= D,
    q(z)_j = C_j[c_j(i)],       c_j(i) = argmin_k ||z_{i,j} - C_j[k]||^2,     C_j: [K, r / m],  j < m,

with ``z_{i,j}`` the ``j``-th of the ``m`` sub-vectors of ``z_i`` (``s = r / m`` dims each) and
``C_j`` its own codebook. Served, an id costs its ``m`` uint8 codes; the ``m K s = K r`` codeword
weights and the ``r D`` of the projection are shared by all ids.

The paper's setting: CNN weights (ResNet-18/50 on ImageNet, 43x / 31x smaller), not embedding
tables. Its three knobs are ``k`` codewords, the subvector size ``m`` (one code per ``m`` weights:
the compression ratio) and the clustering dimensionality ``d~`` of the low-rank representation a
learned linear map expands to the subvector (the accuracy: low-rank error against clustering
error); it starts from a low-rank pre-trained model and fine-tunes end to end through
differentiable k-means. Adapted here: a table row is the unit, ``m`` counts its codes (one per
``D / m`` output weights), one joint projection ``P`` of the whole rank-``r`` code (``s = r / m`` is
the clustering dimensionality), trained from scratch (or from an exact table: :meth:`~LowRankVQ.fit`)
with hard assignments and a straight-through estimator (VQ-VAE's, van den Oord et al. 2017):

    training:  q = C[c] + (z - sg(z))         (forward: the codewords; backward: into C and z alike)
    loss    += mean_i ||sg(z_i) - C[c(i)]||^2 + beta mean_i ||z_i - sg(C[c(i)])||^2

Codebooks learn by gradient (the task's, through the codeword read, and the codebook term above,
k-means by SGD), not by EMA. The two terms of each training lookup go out through the layout
contract's ``regularization_loss()`` (the layout collects them after each forward). Training
keeps a float latent table ``z`` ``[n, r]`` (dense gradient, trained by the dense optimizer with
the codebooks and projection); :meth:`~LowRankVQ.finalize` (the layout's ``serving_layout()``)
assigns every id its nearest codewords and drops ``z``: the state saved after training is the uint8
codes ``[n, m]``, the codebooks ``[m, K, s]`` and ``P`` (buffers, no optimizer state). A training
lookup of ``N`` ids, ``U`` of them distinct, assigns each distinct id once (a GEMM of ``U K r``
products, in chunks); a served one gathers.

Init: ``z`` uniform in ``[-0.05, 0.05]`` like an exact table, ``P`` ``N(0, 1 / r)`` (a vector starts
with an exact row's variance), each codebook from the sub-vectors of ``K`` distinct random ids.

Budget: it bounds the SERVING state, ``n m + 4 (K r + r D)`` bytes (``num_parameters`` counts 4 code
bytes as one weight); training holds the ``n r`` floats of ``z`` on top (``summary()`` says which
state it reports). Chosen: ``K = 256`` (``codewords``), the most codes per id ``m <= D`` that fit
with ``s = 2``, else ``s = 1``; ``rank`` / ``subvectors`` pin either. Less than one code per id at
rank 1 is an error stating the minimum. ``K`` above 256 is an error (uint8 codes); ``K`` above the
number of ids warns and is clamped to it (each id can have its own codeword).

Example::

    >>> vq = LowRankVQ.from_options(2000, 16, {}, budget=3200)
    >>> vq.rank, vq.subvectors, vq.codewords, vq.serving_bytes() <= 4 * 3200
    (4, 4, 256, True)
    >>> vq.lookup(torch.tensor([3, 1999])).shape
    torch.Size([2, 16])
    >>> vq.finalize()
    >>> sorted(vq.state_dict()), vq.codes.dtype, vq.num_parameters() <= 3200
    (['codebooks', 'codes', 'projection'], torch.uint8, True)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from recsys_embed.compression.codebooks import MAX_CODEWORDS, gather_codewords, nearest_codewords
from recsys_embed.compression.method import CompressionMethod, MethodConfigError, check_options, option
from recsys_embed.compression.registry import register_compression

WHERE = "lr2vq"
STAGES = ("training", "serving")


def serving_bytes(num_ids: int, dim: int, rank: int, subvectors: int, codewords: int) -> int:
    """Bytes of the served state: uint8 codes ``n m``, fp32 codebooks ``K r`` and projection ``r D``.

    >>> serving_bytes(2000, 16, 4, 4, 256)
    12352
    """
    return num_ids * subvectors + 4 * (codewords * rank + rank * dim)


def clamp_codewords(codewords: int, num_ids: int) -> int:
    """``codewords`` checked to be in ``[1, 256]``; above ``num_ids`` a warning and ``num_ids``."""
    if not 1 <= codewords <= MAX_CODEWORDS:
        raise MethodConfigError(f"{WHERE}: codewords (K) must be in [1, {MAX_CODEWORDS}] (codes are uint8), got {codewords}")
    if codewords > num_ids:
        warnings.warn(f"{WHERE}: {codewords} codewords for {num_ids} ids; clamped to {num_ids}", UserWarning, stacklevel=3)
    return min(codewords, num_ids)


@register_compression("lr2vq")
class LowRankVQ(CompressionMethod):
    """A rank-``r`` code per id, split in ``m`` sub-vectors each quantized by its own ``K``-codeword
    codebook, projected to ``D``. Options: ``rank``, ``subvectors``, ``codewords``, ``beta`` (the
    commitment weight), ``stage`` (set by a saved state)."""

    description = "LR²VQ: a low-rank code per id, product-quantized to uint8 codes, projected up (Zhu et al. 2022)"

    def __init__(self, num_ids: int, dim: int, rank: int, subvectors: int, codewords: int = MAX_CODEWORDS,
                 beta: float = 0.25, stage: str = "training") -> None:  # fmt: skip
        super().__init__(num_ids, dim)
        if not 1 <= rank <= dim or subvectors < 1 or rank % subvectors:
            raise MethodConfigError(f"{WHERE}: needs 1 <= rank <= dim {dim} and subvectors dividing rank, got rank {rank}, subvectors {subvectors}")
        if not beta >= 0 or stage not in STAGES:
            raise MethodConfigError(f"{WHERE}: needs beta >= 0 and stage in {list(STAGES)}, got {beta!r}, {stage!r}")
        self.rank, self.subvectors, self.beta = rank, subvectors, beta
        self.codewords, self.subdim = clamp_codewords(codewords, num_ids), rank // subvectors
        self._pending: list[torch.Tensor] = []
        latent = torch.empty(num_ids, rank).uniform_(-0.05, 0.05)
        self.projection = nn.Parameter(torch.randn(rank, dim) / rank**0.5)
        seeds = torch.randperm(num_ids)[: self.codewords]  # each codebook starts at K distinct ids' sub-vectors
        self.codebooks = nn.Parameter(latent[seeds].view(self.codewords, subvectors, self.subdim).transpose(0, 1).contiguous())
        self.latent: nn.Parameter | None = nn.Parameter(latent)
        self.stage = "training"
        if stage == "serving":
            self._serve(torch.zeros(num_ids, subvectors, dtype=torch.uint8))

    @classmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> LowRankVQ:
        check_options(options, ["rank", "subvectors", "codewords", "beta", "stage"], WHERE)
        pinned = {k: option(options, k, 0, int, WHERE) for k in ("rank", "subvectors") if k in options}
        rank, subvectors = pinned.get("rank"), pinned.get("subvectors")
        codewords = clamp_codewords(option(options, "codewords", MAX_CODEWORDS, int, WHERE), num_ids)
        geometry = {"beta": option(options, "beta", 0.25, float, WHERE), "stage": option(options, "stage", "training", str, WHERE)}
        if budget is None:
            if rank is None or subvectors is None:
                raise MethodConfigError(f"{WHERE}: give 'rank' and 'subvectors', or a 'budget', got options {dict(options)}")
            return cls(num_ids, dim, rank, subvectors, codewords, **geometry)
        for m in range(dim, 0, -1) if subvectors is None else [subvectors]:
            for r in [2 * m, m] if rank is None else [rank]:
                if r <= dim and r % m == 0 and serving_bytes(num_ids, dim, r, m, codewords) <= 4 * budget:
                    return cls(num_ids, dim, r, m, codewords, **geometry)
        m = subvectors or 1
        rank = rank or m
        least = serving_bytes(num_ids, dim, rank, m, codewords)
        raise MethodConfigError(
            f"{WHERE}: {num_ids} ids of dim {dim} need at least {least} bytes ({-(-least // 4)} weights) served: {m} uint8 "
            f"code(s) per id, rank {rank}, {codewords} codewords; the budget allows {budget} weights ({4 * budget} bytes)"
        )

    def state_config(self) -> dict[str, Any]:
        return {"rank": self.rank, "subvectors": self.subvectors, "codewords": self.codewords, "beta": self.beta, "stage": self.stage}

    # ---- codes ----------------------------------------------------------------------------

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        """The nearest codeword of each sub-vector, ``[N, m]`` int64, of latent rows ``z`` ``[N, r]``
        (:func:`~recsys_embed.compression.codebooks.nearest_codewords`: first index on ties, the same
        codes whatever the batch)."""
        return nearest_codewords(z, self.codebooks)

    def quantized(self, codes: torch.Tensor) -> torch.Tensor:
        """The codewords ``[N, r]`` of codes ``[N, m]``: ``concat_j C_j[codes[:, j]]``."""
        return gather_codewords(self.codebooks, codes)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        if self.latent is None:
            return self.quantized(self.codes.index_select(0, ids)) @ self.projection
        z = self.latent.index_select(0, ids)
        distinct, inverse = torch.unique(ids, return_inverse=True)  # assign each id once: a batch repeats ids
        q = self.quantized(self.assign(self.latent.index_select(0, distinct))[inverse])
        if torch.is_grad_enabled():
            if self.training and len(ids):
                distance = lambda a, b: (a - b).pow(2).sum(1).mean()  # noqa: E731
                self._pending.append(distance(z.detach(), q) + self.beta * distance(z, q.detach()))
            q = q + (z - z.detach())  # straight through: the codewords forward, gradients to z and C
        return q @ self.projection

    def regularization_loss(self) -> torch.Tensor | None:
        """The codebook and commitment terms of the training lookups since the last call, or ``None``."""
        pending, self._pending = self._pending, []
        return torch.stack(pending).sum() if pending else None

    @torch.no_grad()
    def fit(self, table: torch.Tensor, iterations: int = 25) -> LowRankVQ:
        """Start from an exact table ``[n, D]`` (the paper's low-rank pre-training, then clustering):
        ``z = U_r S_r`` of its truncated SVD, each codebook by Lloyd's k-means over its sub-vectors
        (started at ``K`` distinct ones drawn at random), then ``P`` by least squares to the codewords.
        Squared error: at least the SVD tail, at most that plus k-means' ``sum_i ||z_i - q_i||^2``; zero for
        a rank-``r`` table with ``m = 1`` and at most ``K`` distinct rows, or with ``K = n``. Returns self."""
        if self.latent is None or tuple(table.shape) != (self.num_ids, self.dim):
            raise ValueError(f"{WHERE}: fit takes a [{self.num_ids}, {self.dim}] table in the training state, got {tuple(table.shape)} ({self.stage})")
        table = table.detach().to(self.latent.device, torch.float64)
        u, sv, _ = torch.linalg.svd(table, full_matrices=False)
        self.latent.copy_(u[:, : self.rank] * sv[: self.rank])
        sub = self.latent.view(self.num_ids, self.subvectors, self.subdim)
        for j in range(self.subvectors):
            distinct = torch.unique(sub[:, j], dim=0)
            picked = distinct[torch.randperm(len(distinct))[: self.codewords]]
            self.codebooks[j] = picked[torch.arange(self.codewords, device=picked.device) % len(picked)]  # repeats never win a tie: unused
        books = self.codebooks.view(-1, self.subdim)
        for _ in range(iterations):
            flat = (self.assign(self.latent) + torch.arange(self.subvectors, device=books.device) * self.codewords).view(-1)
            sums = torch.zeros_like(books).index_add_(0, flat, sub.reshape(-1, self.subdim))
            counts = torch.bincount(flat, minlength=len(books))[:, None]
            books.copy_(torch.where(counts > 0, sums / counts.clamp(min=1), books))
        codewords = self.quantized(self.assign(self.latent)).double()
        self.projection.copy_(torch.linalg.lstsq(codewords, table).solution)
        return self

    @torch.no_grad()
    def finalize(self) -> None:
        """Serving: every id's nearest codewords as uint8 codes; the latent table is dropped (idempotent)."""
        if self.latent is not None:
            self._serve(self.assign(self.latent).to(torch.uint8))

    def _serve(self, codes: torch.Tensor) -> None:
        del self.latent
        self.latent = None
        self._pending = []
        for name in ("codebooks", "projection"):
            value = getattr(self, name).detach()
            delattr(self, name)
            self.register_buffer(name, value)
        self.register_buffer("codes", codes)
        self.stage = "serving"

    # ---- accounting -----------------------------------------------------------------------

    def serving_bytes(self) -> int:
        """Bytes of the served state (codes, codebooks, projection), whichever state the method is in."""
        return serving_bytes(self.num_ids, self.dim, self.rank, self.subvectors, self.codewords)

    def num_parameters(self) -> int:
        """Training: the fp32 weights (latent, codebooks, projection). Serving: codebooks and
        projection plus the uint8 codes, 4 bytes counted as one weight."""
        codes = self.num_ids * self.subvectors if self.latent is None else 0
        return super().num_parameters() + -(-codes // 4)

    def collision_rate(self) -> float | None:
        """Serving: the fraction of ids whose codes (hence vector) are another id's; training: ``None``."""
        if self.latent is not None:
            return None
        _, counts = torch.unique(self.codes, dim=0, return_counts=True)
        return float(counts[counts > 1].sum()) / self.num_ids

    def details(self) -> str:
        geometry = f"rank {self.rank} = {self.subvectors} sub-vectors x {self.subdim}, {self.codewords} codewords"
        if self.latent is None:
            return f"{geometry}; serving state: uint8 codes {self.num_ids:,}x{self.subvectors}, codebooks, projection ({self.serving_bytes():,} bytes)"
        return f"{geometry}; training state (fp32 latent {self.num_ids:,}x{self.rank}, Adam moments); served after finalize: {self.serving_bytes():,} bytes"
