"""Binary codes for retrieval: recurrent residual binarization of a trained embedding table (BEBR,
Gan et al., "Binary Embedding-based Retrieval at Tencent", KDD 2023), trained embedding to embedding.

A trained float table ``X`` ``[n, d]`` (an item table group's rows) becomes ``T`` steps of ``m`` bits
per row, ``T m`` bits in all, packed 8 to a byte, plus a small binarizer. The source model does not
change: the binarizer is fitted on ``X`` alone (no training data, no model), by reconstruction.

Math, per row ``x`` (``mu``: the mean row of ``X``; ``x_hat_0 = mu``), for ``t = 1 .. T``::

    r_t     = x - x_hat_{t-1}                      the residual the earlier steps left
    b_t     = sign(f_t(r_t)),  f_t(r) = W_t r + c_t      W_t [m, d], c_t [m]   (linear encoder)
    x_hat_t = x_hat_{t-1} + alpha_t g_t(b_t),  g_t(b) = V_t b   V_t [d, m], alpha_t a scalar (linear decoder)

so ``x_hat = mu + sum_t alpha_t V_t b_t`` with ``b_t`` in ``{-1, +1}^m`` (stored as bits ``b > 0``;
``sign(0) = +1``). The paper's ``f_t`` and ``g_t`` are small residual MLPs; here they are linear maps
with a per-step scale ``alpha_t``, enough for reconstruction and cheap to apply to queries. Training
minimizes ``mean ||x - x_hat_T||^2`` with Adam; ``sign`` passes its gradient straight through
(``d sign(z) / dz := 1``, the straight-through estimator), so every step's encoder and decoder learn
from the final reconstruction error. The residual ``r_t`` enters step ``t`` as a constant (no
gradient into the earlier steps through it): through the straight-through surrogate that path
is a wrong, large gradient, and with it training diverges from 2 steps on.

Storage: the codes ``[n, T m / 8]`` uint8 (``np.packbits`` layout: bit ``j`` of a row is bit
``7 - j % 8`` of byte ``j // 8``; step ``t``'s bits are columns ``(t - 1) m .. t m - 1``, whole bytes) and the
binarizer's tensors (``W``, ``c``, ``V``, ``alpha``, ``mu``: what decodes rows and encodes queries).
:meth:`BinaryCodes.memory_bytes` is ``n T m / 8`` plus those tensors' bytes; at ``T m = d`` the codes
are 1/32 of the fp32 table. Saved as an artifact (safetensors + JSON manifest, never pickle).

Retrieval (:mod:`recsys_embed.compression.retrieval`): Hamming distance over all ``T m`` bits weighs
the small late residual steps as much as the first (BEBR's own symmetric distance calculation is
not implemented here); :meth:`BinaryCodes.prefix` gives the first steps' bytes for a coarse Hamming search whose
candidates the decoded rows ``x_hat`` rerank.

Example::

    >>> x = torch.randn(500, 32)
    >>> codes = binarize(x, steps=2, bits=16, iterations=50)
    >>> codes.codes.shape, codes.codes.dtype, codes.bits_per_item
    ((500, 4), dtype('uint8'), 32)
    >>> codes.code_bytes() == 500 * 4 and codes.memory_bytes() > codes.code_bytes()
    True
    >>> codes.decode().shape
    torch.Size([500, 32])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recsys_embed.artifacts import load_artifact, save_artifact
from recsys_embed.errors import ArtifactError

MANIFEST_KEY = "binary_codes"


def sign_ste(z: torch.Tensor) -> torch.Tensor:
    """``sign(z)`` in ``{-1, +1}`` (``sign(0) = +1``) forward, the identity's gradient backward."""
    hard = torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
    return z + (hard - z).detach()


class RecurrentBinarizer(nn.Module):
    """``T`` linear encoder / decoder steps over residuals (module docstring): rows ``[N, d]`` to signs
    ``[N, T, m]`` and back to reconstructions ``[N, d]``."""

    def __init__(self, dim: int, steps: int, bits: int) -> None:
        super().__init__()
        if dim < 1 or steps < 1 or bits < 8 or bits % 8:
            raise ValueError(f"binarizer: needs dim >= 1, steps >= 1 and bits a positive multiple of 8, got {dim}, {steps}, {bits}")
        self.dim, self.steps, self.bits = dim, steps, bits
        self.encoders = nn.Parameter(torch.zeros(steps, bits, dim))  # W_t
        self.encoder_bias = nn.Parameter(torch.zeros(steps, bits))  # c_t
        self.decoders = nn.Parameter(torch.zeros(steps, dim, bits))  # V_t
        self.alpha = nn.Parameter(torch.ones(steps))
        self.register_buffer("mean", torch.zeros(dim))  # mu

    def initialize(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """Start values from ``x``: ``mu`` its mean; random unit encoder rows; decoders their transposes,
        scaled so step 1 reconstructs the residual's spread and each later step a quarter of the one before."""
        with torch.no_grad():
            self.mean.copy_(x.mean(0))
            spread = float((x - self.mean).pow(2).sum(1).mean().sqrt()) or 1.0
            w = torch.randn(self.steps, self.bits, self.dim, generator=generator)
            w = w / w.norm(dim=2, keepdim=True)
            self.encoders.copy_(w / spread * self.dim**0.5)
            self.encoder_bias.zero_()
            # E|w . r| = sqrt(2 / pi) spread / sqrt(d) for a unit w; m random directions cover d / m of it each
            self.decoders.copy_(w.transpose(1, 2) * (0.8 * spread * self.dim**0.5 / self.bits))
            self.alpha.copy_(0.25 ** torch.arange(self.steps, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Signs ``[N, T, m]`` (straight-through) and the reconstruction ``x_hat_T`` ``[N, d]`` of rows ``x`` ``[N, d]``."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"binarizer: rows must be [N, {self.dim}], got {tuple(x.shape)}")
        x_hat = self.mean.expand_as(x)
        signs = []
        for t in range(self.steps):
            b = sign_ste((x - x_hat.detach()) @ self.encoders[t].T + self.encoder_bias[t])
            x_hat = x_hat + self.alpha[t] * (b @ self.decoders[t].T)
            signs.append(b)
        return torch.stack(signs, 1), x_hat

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> np.ndarray:
        """Packed codes ``[N, T m / 8]`` uint8 of rows ``x`` ``[N, d]`` (items or queries)."""
        signs, _ = self(x.detach().float().cpu())
        return np.packbits(signs.reshape(x.shape[0], -1).numpy() > 0, axis=1)

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> torch.Tensor:
        """Reconstructions ``[N, d]`` of packed codes ``[N, T m / 8]``: ``mu + sum_t alpha_t V_t b_t``."""
        bits = np.unpackbits(np.asarray(codes, np.uint8), axis=1, count=self.steps * self.bits)
        signs = torch.from_numpy(bits.astype(np.float32) * 2 - 1).reshape(-1, self.steps, self.bits)
        return self.mean + torch.einsum("nts,tds,t->nd", signs, self.decoders, self.alpha)

    def state_bytes(self) -> int:
        """Bytes of the binarizer's tensors (all stored with the codes)."""
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())


@dataclass
class BinaryCodes:
    """Packed codes ``[n, T m / 8]`` uint8 of ``n`` rows and the binarizer that made them."""

    codes: np.ndarray
    binarizer: RecurrentBinarizer

    @property
    def bits_per_item(self) -> int:
        return self.binarizer.steps * self.binarizer.bits

    def code_bytes(self) -> int:
        """``n T m / 8``: the codes alone."""
        return int(self.codes.nbytes)

    def memory_bytes(self) -> int:
        """The codes plus the binarizer's tensors (``W``, ``c``, ``V``, ``alpha``, ``mu``)."""
        return self.code_bytes() + self.binarizer.state_bytes()

    def decode(self) -> torch.Tensor:
        """The reconstructed rows ``[n, d]``."""
        return self.binarizer.decode(self.codes)

    def encode(self, queries: torch.Tensor) -> np.ndarray:
        """Packed codes of query vectors ``[Q, d]`` by the same binarizer (for Hamming search)."""
        return self.binarizer.encode(queries)

    def prefix(self, steps: int, codes: np.ndarray | None = None) -> np.ndarray:
        """The first ``steps`` steps' bits of ``codes`` (default: the items'), whole bytes ``[N, steps m / 8]``:
        coarse codes for a Hamming search whose candidates the full decoded rows rerank."""
        if not 1 <= steps <= self.binarizer.steps:
            raise ValueError(f"prefix: steps must be in [1, {self.binarizer.steps}], got {steps}")
        return (self.codes if codes is None else codes)[:, : steps * self.binarizer.bits // 8]

    def save(self, path: str | Path) -> Path:
        """An artifact directory (safetensors + JSON manifest; written atomically)."""
        b = self.binarizer
        tensors = {"codes": torch.from_numpy(self.codes.copy()), **{f"binarizer.{k}": v for k, v in b.state_dict().items()}}
        config = {"dim": b.dim, "steps": b.steps, "bits": b.bits, "rows": int(self.codes.shape[0])}
        return save_artifact(path, tensors, {MANIFEST_KEY: config})

    @classmethod
    def load(cls, path: str | Path) -> BinaryCodes:
        """The codes :meth:`save` wrote; ``ArtifactError`` for another kind of artifact."""
        tensors, manifest = load_artifact(path)
        config = manifest.get(MANIFEST_KEY)
        if not isinstance(config, dict):
            raise ArtifactError(f"artifact {path}: no {MANIFEST_KEY!r} in its manifest; it holds no binary codes")
        binarizer = RecurrentBinarizer(config["dim"], config["steps"], config["bits"])
        binarizer.load_state_dict({k[len("binarizer."):]: v for k, v in tensors.items() if k.startswith("binarizer.")})
        return cls(tensors["codes"].numpy(), binarizer.eval())


def binarize(
    x: torch.Tensor,
    steps: int = 1,
    bits: int | None = None,
    iterations: int = 300,
    lr: float = 0.01,
    batch_size: int = 4096,
    seed: int = 0,
) -> BinaryCodes:
    """Fit a :class:`RecurrentBinarizer` of ``steps`` x ``bits`` (default ``bits``: ``d`` rounded up to
    a multiple of 8) to rows ``x`` ``[n, d]`` (``iterations`` Adam steps on batches of ``batch_size``
    rows drawn with ``seed``: the same inputs give the same codes) and return their codes."""
    x = x.detach().float().cpu()
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"binarize: rows must be a non-empty [n, d] matrix, got {tuple(x.shape)}")
    binarizer = RecurrentBinarizer(x.shape[1], steps, bits if bits is not None else -(-x.shape[1] // 8) * 8)
    generator = torch.Generator().manual_seed(seed)
    binarizer.initialize(x, generator)
    optimizer = torch.optim.Adam(binarizer.parameters(), lr=lr)
    for _ in range(iterations):
        rows = x if x.shape[0] <= batch_size else x[torch.randint(0, x.shape[0], (batch_size,), generator=generator)]
        loss = (binarizer(rows)[1] - rows).pow(2).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return BinaryCodes(binarizer.eval().encode(x), binarizer)


def binarize_table(layout: Any, group: str, first_row: int = 0, **options: Any) -> BinaryCodes:
    """:func:`binarize` of a trained layout's table group ``group`` (its ``table_vectors(group)``
    ``[num_ids, D]``), from row ``first_row`` on (sequential item tables: 2, past padding and OOV)."""
    with torch.no_grad():
        vectors = layout.table_vectors(group)[first_row:]
    return binarize(vectors, **options)
