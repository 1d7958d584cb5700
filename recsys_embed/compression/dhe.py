"""Deep Hash Embedding, DHE (Kang et al., KDD 2021, "Learning to Embed Categorical Features
without Embedding Tables"): no table at all; an id's vector is computed from ``k`` stable hashes,

    e(x) = [E(h_1(x)), ..., E(h_k(x))],          h_j(x) in [0, m),  e(x): [k],
    vector(x) = W_L+1 . act(BN(W_L ... act(BN(W_1 e(x) + b_1)) ... + b_L)) + b_L+1,

with ``h_j`` stable salted 64-bit hashes (:func:`recsys_embed.hashing.bucket_torch`, hash ``j``
salted by the ``j``-th seed derived from ``salt``), ``m = 10^6`` buckets, and ``E`` the dense
encoding: ``uniform`` maps a bucket to ``2 h / (m - 1) - 1`` in ``[-1, 1]``, ``gaussian`` takes
pairs of buckets through Box-Muller (``p = (h + 1) / m``: ``sqrt(-2 ln p_1) (cos, sin)(2 pi p_2)``,
``k`` even). The decoder is an MLP of ``L`` hidden layers of width ``H`` (Mish, as the paper, or
ReLU; batch norm optional, off by default: with it a vector depends on its batch in training),
then a linear layer to ``D``. The paper's default ``k = 1024``; here ``k = 256`` (CPU cost).

Budget: the widest ``H`` whose MLP fits, ``k H + H + (L - 1)(H^2 + H) + H D + D`` weights (plus
``4 H L`` with batch norm: scale, shift and the running mean and variance); the least is
``H = 1``. Defaults: ``L = 2``, Mish, uniform, no batch norm. Memory is small, compute is not:
per id ``k`` hashes and ``2 (k H + (L - 1) H^2 + H D)`` FLOPs of MLP (about 2 FLOPs per stored
weight, forward), both in :meth:`~DeepHashEmbedding.details`; at 1/10 of a 100k x 16 table that
is 318k FLOPs per id, some 60x the time of the exact table per lookup (forward + backward +
update, one thread).

Example::

    >>> dhe = DeepHashEmbedding.from_options(1000, 16, {"hashes": 64, "layers": 1}, budget=1600)
    >>> dhe.width, dhe.num_parameters() <= 1600, dhe.lookup(torch.tensor([3, 999])).shape
    (19, True, torch.Size([2, 16]))
    >>> dhe.details()
    '64 uniform hashes -> MLP 64-19-16 (mish), 3,040 FLOPs per id'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from recsys_embed.compression.kernels import hash_buckets
from recsys_embed.compression.method import CompressionMethod, MethodConfigError, check_options, check_sizing, option
from recsys_embed.compression.registry import register_compression
from recsys_embed.hashing import hash_int_torch, seed_of

ENCODINGS = ("uniform", "gaussian")
ACTIVATIONS = {"mish": nn.Mish, "relu": nn.ReLU}
OPTIONS = ["width", "hashes", "buckets", "encoding", "layers", "activation", "batchnorm", "salt"]


def mlp_weights(hashes: int, width: int, layers: int, dim: int, batchnorm: bool) -> int:
    """Weights (and batch norm's float buffers) of the decoder ``k -> H (x L) -> D``.

    >>> mlp_weights(64, 19, 1, 16, False), mlp_weights(256, 11, 2, 16, True)
    (1555, 3239)
    """
    hidden = hashes * width + width + (layers - 1) * (width * width + width)
    return hidden + width * dim + dim + (4 * width * layers if batchnorm else 0)


@register_compression("dhe")
class DeepHashEmbedding(CompressionMethod):
    """``k`` hashes of the id, densely encoded, through an MLP to ``D``. Options: ``width`` (``H``;
    or a budget), ``hashes`` (``k``), ``buckets`` (``m``), ``encoding``, ``layers`` (``L``),
    ``activation``, ``batchnorm``, ``salt``."""

    description = "DHE: k stable hashes, densely encoded, through an MLP; no table (Kang et al. 2021)"

    def __init__(self, num_ids: int, dim: int, width: int, hashes: int = 256, buckets: int = 1_000_000,
                 encoding: str = "uniform", layers: int = 2, activation: str = "mish", batchnorm: bool = False,
                 salt: str = "dhe") -> None:  # fmt: skip
        super().__init__(num_ids, dim)
        if encoding not in ENCODINGS:
            raise MethodConfigError(f"dhe: encoding must be one of {list(ENCODINGS)}, got {encoding!r}")
        if activation not in ACTIVATIONS:
            raise MethodConfigError(f"dhe: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if hashes < 1 or encoding == "gaussian" and hashes % 2:
            raise MethodConfigError(f"dhe: hashes must be >= 1 (even for the gaussian encoding's pairs), got {hashes}")
        if buckets < 2 or layers < 1 or width < 1:
            raise MethodConfigError(f"dhe: needs buckets >= 2, layers >= 1 and width >= 1, got {buckets}, {layers}, {width}")
        self.width, self.hashes, self.buckets, self.encoding = width, hashes, buckets, encoding
        self.layers, self.activation, self.batchnorm, self.salt = layers, activation, batchnorm, salt
        self.register_buffer("seeds", hash_int_torch(torch.arange(hashes), seed_of(salt)), persistent=False)
        blocks: list[nn.Module] = []
        for inputs in [hashes] + [width] * (layers - 1):
            blocks += [nn.Linear(inputs, width), *([nn.BatchNorm1d(width)] if batchnorm else []), ACTIVATIONS[activation]()]
        self.mlp = nn.Sequential(*blocks, nn.Linear(width, dim))

    @classmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> DeepHashEmbedding:
        check_options(options, OPTIONS, "dhe")
        check_sizing(options, "width", budget, "dhe")
        geometry = {
            "hashes": option(options, "hashes", 256, int, "dhe"),
            "buckets": option(options, "buckets", 1_000_000, int, "dhe"),
            "encoding": option(options, "encoding", "uniform", str, "dhe"),
            "layers": option(options, "layers", 2, int, "dhe"),
            "activation": option(options, "activation", "mish", str, "dhe"),
            "batchnorm": option(options, "batchnorm", False, bool, "dhe"),
            "salt": option(options, "salt", "dhe", str, "dhe"),
        }
        if budget is None:
            return cls(num_ids, dim, option(options, "width", 1, int, "dhe"), **geometry)

        def weights(width: int) -> int:
            return mlp_weights(geometry["hashes"], width, geometry["layers"], dim, geometry["batchnorm"])

        if budget < weights(1):
            raise MethodConfigError(
                f"dhe: an MLP {geometry['hashes']}-1{'-1' * (geometry['layers'] - 1)}-{dim} needs at least {weights(1)} weights "
                f"({4 * weights(1)} bytes), the budget allows {budget}"
            )
        width = 1
        while weights(width + 1) <= budget:
            width += 1
        return cls(num_ids, dim, width, **geometry)

    def state_config(self) -> dict[str, Any]:
        return {"width": self.width, "hashes": self.hashes, "buckets": self.buckets, "encoding": self.encoding,
                "layers": self.layers, "activation": self.activation, "batchnorm": self.batchnorm, "salt": self.salt}  # fmt: skip

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """The dense hash encoding ``[N, k]`` of ids ``[N]`` (no parameters)."""
        # hash j of x is splitmix64(x ^ seed_j): bucket_torch with seed 0 of x ^ seed_j, all k at once
        buckets = hash_buckets(ids[:, None] ^ self.seeds, 0, self.buckets).to(torch.float32)  # [N, k]
        if self.encoding == "uniform":
            return buckets * (2 / (self.buckets - 1)) - 1
        p = (buckets + 1) / self.buckets  # (0, 1]
        radius, angle = torch.sqrt(-2 * torch.log(p[:, 0::2])), 2 * math.pi * p[:, 1::2]
        return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encode(ids))

    def flops_per_id(self) -> int:
        """Multiply-adds of the MLP, times two, per id (the ``k`` hashes come on top)."""
        return 2 * (self.hashes * self.width + (self.layers - 1) * self.width**2 + self.width * self.dim)

    def details(self) -> str:
        widths = "-".join(str(w) for w in [self.hashes, *[self.width] * self.layers, self.dim])
        norm = ", batch norm" if self.batchnorm else ""
        return f"{self.hashes} {self.encoding} hashes -> MLP {widths} ({self.activation}{norm}), {self.flops_per_id():,} FLOPs per id"
