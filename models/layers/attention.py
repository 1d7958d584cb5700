"""DIN's local activation unit: one attention weight per history item, given the candidate.

Shape notation: B batch, L history length, D candidate/history embedding dim.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recsys_embed.models.layers.feedforward import MLPBlock


class LocalActivationUnit(nn.Module):
    """``w_j = MLP([h_j, c, h_j - c, h_j * c])`` for each history item ``h_j`` and candidate ``c``.

    ``forward(history [B, L, D], candidate [B, D], mask [B, L] bool) -> weights [B, L]``.
    The MLP runs on the unmasked positions only, so a masked position has weight 0 and never
    reaches the hidden activation's batch statistics. The weights are not normalised (the
    paper keeps the intensity of the user's interest); ``softmax=True`` normalises them over
    the unmasked positions instead (a row without history gets all zeros).

    Example::

        >>> unit = LocalActivationUnit(4, hidden=(8,), activation="prelu")
        >>> mask = torch.tensor([[True, True, False], [True, False, False]])
        >>> w = unit(torch.randn(2, 3, 4), torch.randn(2, 4), mask)
        >>> w.shape, bool((w[~mask] == 0).all())
        (torch.Size([2, 3]), True)
    """

    def __init__(
        self, dim: int, hidden: Sequence[int] = (80, 40), activation: str = "dice", softmax: bool = False
    ) -> None:
        super().__init__()
        self.mlp = MLPBlock(4 * dim, hidden, activation)
        self.score = nn.Linear(self.mlp.out_dim, 1)
        self.softmax = softmax

    def forward(self, history: torch.Tensor, candidate: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        history_ok = history.dim() == 3 and mask.shape == history.shape[:2]
        if not history_ok or candidate.shape != (history.shape[0], history.shape[-1]):
            raise ValueError(
                f"expected history [B, L, D], candidate [B, D], mask [B, L]; got {tuple(history.shape)}, "
                f"{tuple(candidate.shape)}, {tuple(mask.shape)}"
            )
        row = mask.nonzero(as_tuple=True)[0]
        h, c = history[mask], candidate[row]
        if isinstance(self.mlp.layers[0], nn.Linear):
            # W [h, c, h - c, h * c] = (W1 + W3) h + (W2 - W3) c + W4 (h * c): no [N, 4D] concat,
            # and the candidate's part is computed once per sample instead of once per position
            first = self.mlp.layers[0]
            w_h, w_c, w_diff, w_prod = first.weight.split(history.shape[-1], dim=1)
            per_sample = nn.functional.linear(candidate, w_c - w_diff, first.bias)
            hidden = nn.functional.linear(h, w_h + w_diff) + per_sample[row] + nn.functional.linear(h * c, w_prod)
            scores = self.score(self.mlp.layers[1:](hidden)).squeeze(-1)
        else:
            scores = self.score(self.mlp(torch.cat([h, c, h - c, h * c], dim=-1))).squeeze(-1)
        weights = torch.zeros(mask.shape, dtype=history.dtype, device=history.device).masked_scatter(mask, scores)
        if self.softmax:
            weights = weights.masked_fill(~mask, torch.finfo(weights.dtype).min).softmax(dim=1) * mask
        return weights
