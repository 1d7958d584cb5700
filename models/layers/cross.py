"""DCN-v2's cross layers (Wang et al. 2021, "DCN V2: Improved Deep & Cross Network and
Practical Lessons for Web-scale Learning to Rank Systems", eqs. 1 and 2).

Each layer crosses the current vector ``x_l`` with the network's input ``x_0``
(``⊙``: element-wise product), so layer ``l`` holds feature crosses up to degree ``l + 1``:

- full rank (:class:`CrossLayer`): ``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l``, ``W_l`` of
  ``width x width``;
- low-rank mixture of K experts (:class:`MixtureCrossLayer`, the paper's DCN-Mix):
  ``x_{l+1} = sum_k G_k(x_l) E_k(x_l) + x_l``, expert
  ``E_k(x) = x_0 ⊙ (U_k g(C_k g(V_k^T x)) + b_l)`` with ``U_k, V_k`` of ``width x r``, ``C_k`` of
  ``r x r``, ``g = tanh`` (as DeepCTR-Torch's ``CrossNetMix``), and the gates
  ``G(x) = softmax_k(<w_k, x>)``. With one expert there is no gate (it would be 1): the low-rank cross
  ``x_0 ⊙ (U g(C g(V^T x_l)) + b) + x_l`` (``r << width``: ``2 r width + r^2`` weights instead
  of ``width^2``).

Shape notation: B batch, W width (the flat input's), K experts, r rank.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossLayer(nn.Module):
    """``forward(x0 [B, W], x [B, W]) -> [B, W]``: ``x0 * (W x + b) + x``; Xavier-normal ``W``, zero ``b``.

    Example::

        >>> layer = CrossLayer(4)
        >>> x0 = torch.randn(3, 4)
        >>> torch.testing.assert_close(layer(x0, x0), x0 * layer.linear(x0) + x0)
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        nn.init.xavier_normal_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class MixtureCrossLayer(nn.Module):
    """``forward(x0 [B, W], x [B, W]) -> [B, W]``: a mixture of ``experts`` low-rank crosses of
    rank ``rank`` (module docstring). ``V, C, U`` are stored per expert as ``[K, W, r]``,
    ``[K, r, r]``, ``[K, r, W]``, Xavier-normal per expert; zero bias; ``gate`` is None for one expert.

    Example::

        >>> layer = MixtureCrossLayer(width=6, rank=2, experts=3)
        >>> layer(torch.randn(5, 6), torch.randn(5, 6)).shape
        torch.Size([5, 6])
    """

    def __init__(self, width: int, rank: int, experts: int) -> None:
        super().__init__()
        if min(width, rank, experts) <= 0:
            raise ValueError(f"width, rank and experts must be > 0, got {width}, {rank}, {experts}")
        self.down = nn.Parameter(torch.empty(experts, width, rank))  # V_k
        self.middle = nn.Parameter(torch.empty(experts, rank, rank))  # C_k
        self.up = nn.Parameter(torch.empty(experts, rank, width))  # U_k^T
        for weight in (self.down, self.middle, self.up):
            for expert in weight.data:
                nn.init.xavier_normal_(expert)
        self.bias = nn.Parameter(torch.zeros(width))
        self.gate = nn.Linear(width, experts, bias=False) if experts > 1 else None

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(torch.einsum("bw,kwr->bkr", x, self.down))
        hidden = torch.tanh(torch.einsum("bkr,krs->bks", hidden, self.middle))
        experts = x0.unsqueeze(1) * (torch.einsum("bkr,krw->bkw", hidden, self.up) + self.bias)  # [B, K, W]
        if self.gate is None:
            return experts.squeeze(1) + x
        return torch.einsum("bk,bkw->bw", torch.softmax(self.gate(x), dim=-1), experts) + x


class CrossNetwork(nn.Module):
    """``num_layers`` cross layers on ``x0 [B, W]`` -> ``[B, W]``: full rank when ``rank`` is
    None, else :class:`MixtureCrossLayer` of that rank and ``experts``.

    Example::

        >>> CrossNetwork(6, num_layers=2)(torch.randn(5, 6)).shape
        torch.Size([5, 6])
    """

    def __init__(self, width: int, num_layers: int, rank: int | None = None, experts: int = 1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            CrossLayer(width) if rank is None else MixtureCrossLayer(width, rank, experts) for _ in range(num_layers)
        )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x
