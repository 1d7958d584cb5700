"""Popularity baseline for next-item prediction: every user gets the items ranked by their
training-set frequency. Same id layout and ranking API as BERT4Rec (see ``ranking``).

Shape notation: B batch, L history length, V = num_items + 2.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from recsys_embed.models.next_item_ranking import PAD_ID, check_items


class Popularity(nn.Module):
    """``fit(sequences)`` counts items; ``score_next(history [B, L]) -> [B, V]`` returns the
    counts for every row (padding and mask ids ``-inf``). ``counts [V]`` is a buffer, so it
    saves with the state dict and can weigh :func:`sample_negatives`.

    Example::

        >>> from recsys_embed.models import rank_of
        >>> model = Popularity(num_items=4).fit(torch.tensor([[2, 3, 3, 0], [3, 4, 0, 0]]))
        >>> model.counts.tolist()
        [0, 0, 1, 3, 1, 0]
        >>> history = torch.tensor([[3, 0]])
        >>> rank_of(model.score_next(history), torch.tensor([2]), exclude=history)
        tensor([1.5000])
    """

    def __init__(self, num_items: int) -> None:
        super().__init__()
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        self.num_items = num_items
        self.register_buffer("counts", torch.zeros(num_items + 2, dtype=torch.int64))

    def fit(self, sequences: torch.Tensor | Iterable[torch.Tensor]) -> Popularity:
        """Count the items of ``sequences``: one ``[N, L]`` tensor (0 pads) or an iterable of
        them (streamed batches). Replaces any earlier counts; returns ``self``."""
        counts = torch.zeros_like(self.counts)
        for batch in [sequences] if isinstance(sequences, torch.Tensor) else sequences:
            check_items(batch, self.num_items, "Popularity.fit sequences")
            items = batch[batch != PAD_ID].to(torch.int64).to(counts.device)
            counts += torch.bincount(items, minlength=counts.numel())
        self.counts.copy_(counts)
        return self

    def score_next(self, history: torch.Tensor) -> torch.Tensor:
        """``[B, L] -> [B, V]`` float scores (the same for every row: popularity is not personal)."""
        check_items(history, self.num_items, "history")
        scores = self.counts.to(torch.float32).expand(history.shape[0], -1).clone()
        scores[:, [PAD_ID, self.num_items + 1]] = float("-inf")
        return scores
