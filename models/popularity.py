"""Popularity baseline for next-item prediction: every user gets the items ranked by their
training-set frequency. Same id layout and ranking API as BERT4Rec (see ``next_item_ranking``).

Shape notation: B batch, V ids (rows of the item table group).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from recsys_embed.models.next_item_ranking import FIRST_ITEM_ID, PAD_ID, check_items


class Popularity(nn.Module):
    """``fit(ids)`` counts items; ``score_next(batch) -> [B, V]`` returns the counts for every
    row (padding and out-of-vocabulary ids ``-inf``). ``counts [V]`` is a buffer, so it saves
    with the state dict and can weigh :func:`sample_negatives`.

    Example::

        >>> from recsys_embed.models import rank_of
        >>> model = Popularity(rows=6).fit(torch.tensor([[3, 4, 4, 0], [4, 5, 0, 0]]))
        >>> model.counts.tolist()
        [0, 0, 0, 1, 3, 1]
        >>> rank_of(model.score_next(1), torch.tensor([3]), exclude=torch.tensor([[4]]))
        tensor([1.5000])
    """

    def __init__(self, rows: int) -> None:
        super().__init__()
        if rows <= FIRST_ITEM_ID:
            raise ValueError(f"rows must be > {FIRST_ITEM_ID} (padding, out-of-vocabulary, items), got {rows}")
        self.rows = rows
        self.register_buffer("counts", torch.zeros(rows, dtype=torch.int64))

    def fit(self, ids: torch.Tensor | Iterable[torch.Tensor]) -> Popularity:
        """Count the item ids of one tensor (any shape, 0 pads) or an iterable of them
        (streamed batches). Replaces any earlier counts; returns ``self``."""
        counts = torch.zeros_like(self.counts)
        for batch in [ids] if isinstance(ids, torch.Tensor) else ids:
            check_items(batch, self.rows, "Popularity.fit ids")
            items = batch[batch != PAD_ID].to(torch.int64).to(counts.device)
            counts += torch.bincount(items, minlength=counts.numel())
        self.counts.copy_(counts)
        return self

    def score_next(self, batch: int) -> torch.Tensor:
        """``[batch, V]`` float scores, the same for every row (popularity is not personal)."""
        scores = self.counts.to(torch.float32).expand(batch, -1).clone()
        scores[:, :FIRST_ITEM_ID] = float("-inf")
        return scores
