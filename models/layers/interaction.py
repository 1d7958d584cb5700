"""Interactions across feature fields: AutoInt's interacting layer (multi-head self-attention)
and the factorization machine's pairwise term.

Shape notation: B batch, F fields, H heads, d head dim, D field dim.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_embed.models.layers.field_attention import interacting_attention

RESIDUALS = ("projection", "identity")


class InteractingLayer(nn.Module):
    """One AutoInt interacting layer (Song et al. 2019, eqs. 5-8).

    ``[B, F, in_dim] -> [B, F, H * d]``: for each head h, field m attends over all fields with
    ``softmax_k(<W_q^h e_m, W_k^h e_k>)`` and sums ``W_v^h e_k``; the heads are concatenated, a
    residual is added and ReLU applied. The residual is ``W_res e_m``, a learned projection, as in
    the paper (``residual="projection"``), or ``e_m`` itself (``residual="identity"``, possible
    only when ``in_dim == H * d``: a layer that changes the width projects in either mode).
    No positional input: permuting the fields permutes the output the same way. The
    query, key and value projections of all heads are one matrix (``[3 * H * d, in_dim]``: queries,
    keys, values; head h in rows ``h * d : (h + 1) * d`` of each third, each third initialised
    Xavier-uniform on its own); attention, residual and ReLU run in
    :func:`interacting_attention` (a fused CPU kernel where it applies). The residual projection
    starts Xavier-uniform.

    Example::

        >>> layer = InteractingLayer(in_dim=8, head_dim=4, num_heads=2)
        >>> layer(torch.randn(3, 5, 8)).shape
        torch.Size([3, 5, 8])
    """

    def __init__(self, in_dim: int, head_dim: int, num_heads: int, residual: str = "projection") -> None:
        super().__init__()
        if min(in_dim, head_dim, num_heads) <= 0:
            raise ValueError(f"in_dim, head_dim and num_heads must be > 0, got {in_dim}, {head_dim}, {num_heads}")
        if residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {RESIDUALS}, got {residual!r}")
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.out_dim = num_heads * head_dim
        self.query_key_value = nn.Linear(in_dim, 3 * self.out_dim, bias=False)
        for block in self.query_key_value.weight.data.chunk(3):
            nn.init.xavier_uniform_(block)
        self.residual: nn.Module = nn.Identity()
        if residual == "projection" or in_dim != self.out_dim:
            self.residual = nn.Linear(in_dim, self.out_dim, bias=False)
            nn.init.xavier_uniform_(self.residual.weight)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return interacting_attention(self.query_key_value(fields), self.residual(fields), self.num_heads)


def fm_pairwise(fields: torch.Tensor) -> torch.Tensor:
    """The factorization machine's second-order term (Rendle 2010, eq. 1 and lemma 3.1):
    ``sum_{i < j} <v_i, v_j> = 0.5 * sum_d ((sum_f v_fd)^2 - sum_f v_fd^2)``, ``[B, F, D] -> [B]``
    in ``O(F * D)`` per sample instead of ``O(F^2 * D)``.

    Example::

        >>> fm_pairwise(torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])).tolist()  # 11 + 17 + 39
        [67.0]
    """
    return 0.5 * (fields.sum(1).square() - fields.square().sum(1)).sum(-1)
