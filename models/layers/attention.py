"""DIN's local activation unit: one attention weight per history item, given the candidate.

Shape notation: B batch, L history length, D candidate/history embedding dim, N real (unmasked)
history positions in the batch, packed row-major by :func:`pack_positions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from recsys_embed.models.layers.blocks import row_blocks
from recsys_embed.models.layers.feedforward import MLPBlock
from recsys_embed.models.layers.pooling import pack_positions

EVAL_BLOCK_ELEMENTS = 1 << 17  # eval mode: widest hidden layer x rows per block of positions


class LocalActivationUnit(nn.Module):
    """``w_j = MLP([h_j, c, h_j - c, h_j * c])`` for each history item ``h_j`` and candidate ``c``.

    ``forward(history [B, L, D], candidate [B, D], mask [B, L] bool) -> weights [B, L]``;
    :meth:`packed_weights` gives the same weights for the packed real positions only.
    The MLP runs on the unmasked positions only, so a masked position has weight 0 and never
    reaches the hidden activation's batch statistics. The weights are not normalised (the
    paper keeps the intensity of the user's interest); ``softmax=True`` normalises them over
    the unmasked positions instead (a row without history gets all zeros).

    The first Linear ``W = [W_h, W_c, W_d, W_p]`` (parameters as stored) runs folded:
    ``W [h, c, h - c, h * c] + b = [W_h + W_d, W_p] [h, h * c] + ((W_c - W_d) c + b)``, the
    candidate's part once per sample and gathered to its positions: a ``2D``-wide input per
    position instead of ``4D``. In eval mode every layer acts row by row, so the MLP runs over blocks of
    positions that stay in cache (:data:`EVAL_BLOCK_ELEMENTS`).

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
        self.dim = dim
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
        (rows, cols), packed = pack_positions([history], mask)
        weights = self.packed_weights(packed, candidate, rows)
        return torch.zeros(mask.shape, dtype=weights.dtype, device=weights.device).index_put((rows, cols), weights)

    def packed_weights(self, history: torch.Tensor, candidate: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Weights of the real positions: ``history [N, D]`` (position ``j`` of sample ``rows[j]``),
        ``candidate [B, D]``, ``rows [N]`` ascending -> ``[N]``."""
        first = [*self.mlp.layers, self.score][0]
        w_h, w_c, w_diff, w_prod = first.weight.split(self.dim, dim=1)
        per_sample = F.linear(candidate, w_c - w_diff, first.bias)  # [B, H_1]: the candidate's part, once per sample
        folded = torch.cat([w_h + w_diff, w_prod], dim=1)
        if self.training:
            scores = self.scores(history, candidate, per_sample, folded, rows)
        else:
            width = max([self.dim, *(layer.out_features for layer in self.mlp.layers if isinstance(layer, nn.Linear))])
            blocks = row_blocks(history.shape[0], width, history.device, EVAL_BLOCK_ELEMENTS)
            scores = (
                torch.cat([self.scores(history[b], candidate, per_sample, folded, rows[b]) for b in blocks])
                if blocks
                else history.new_zeros(0)
            )
        return segment_softmax(scores, rows, candidate.shape[0]) if self.softmax else scores

    def scores(
        self, history: torch.Tensor, candidate: torch.Tensor, per_sample: torch.Tensor, folded: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        """Unnormalised scores of positions ``history [n, D]`` of samples ``rows [n]`` against their
        candidates ``[B, D]``, given the first layer folded: ``folded [H_1, 2D]`` and the candidates'
        part ``per_sample [B, H_1]`` -> ``[n]``."""
        c = candidate.index_select(0, rows)
        x = torch.addmm(per_sample.index_select(0, rows), torch.cat([history, history * c], dim=1), folded.t())
        for layer in [*self.mlp.layers, self.score][1:]:
            x = layer(x)
        return x.squeeze(-1)


def segment_softmax(scores: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
    """Softmax of ``scores [N]`` within each sample (``rows [N]``: the sample of each score) -> ``[N]``.

    Example::

        >>> segment_softmax(torch.tensor([0.0, 0.0, 5.0]), torch.tensor([0, 0, 1]), 2).tolist()
        [0.5, 0.5, 1.0]
    """
    with torch.no_grad():  # any per-sample shift gives the same softmax: the max keeps exp in range
        peak = scores.new_full((batch,), float("-inf")).scatter_reduce(0, rows, scores, "amax")
    exp = (scores - peak.index_select(0, rows)).exp()
    total = exp.new_zeros(batch).index_add(0, rows, exp)
    return exp / total.index_select(0, rows)
