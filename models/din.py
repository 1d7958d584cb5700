"""Deep Interest Network (Zhou et al. 2018, "Deep Interest Network for Click-Through Rate
Prediction").

The candidate is the concat of some pooled features' embeddings (``item_id``,
``item_category``); the behaviour sequence is the concat of the matching history features
(``hist_item_id``, ``hist_item_category``). A local activation unit scores each history item
against the candidate, the history is sum-pooled with those weights (not normalised unless
``softmax=True``) into the user's interest, and an MLP over [every pooled feature, other
sequences mean-pooled, the interest, dense] gives the logit. ``attention=False`` is the
paper's ablation: plain sum pooling of the history.

Shape notation: B batch, L history length, D_c candidate dim (sum of the candidate features' dims).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recsys_embed.models.layers.attention import LocalActivationUnit
from recsys_embed.models.layers.feedforward import MLPBlock
from recsys_embed.models.layers.pooling import FlatInputs, pack_positions, require_features, segment_sum
from recsys_embed.tables.base import Embeddings, EmbeddingShapes


@dataclass
class DINConfig:
    """DIN hyper-parameters.

    Args:
        history: history sequence feature -> candidate pooled feature it matches, e.g.
            ``{"hist_item_id": "item_id", "hist_item_category": "item_category"}``. The
            history features must share one length L; a position counts when it is real in
            all of them.
        attention: False replaces attention by plain sum pooling over the history.
        softmax: normalise the attention weights over the history (the paper does not).
        attention_hidden, attention_activation: the local activation unit's MLP.
        hidden, activation, dropout: the MLP on top (activation dice, prelu, relu or gelu).
    """

    history: dict[str, str] = field(default_factory=dict)
    attention: bool = True
    softmax: bool = False
    attention_hidden: tuple[int, ...] = (80, 40)
    attention_activation: str = "dice"
    hidden: tuple[int, ...] = (200, 80)
    activation: str = "dice"
    dropout: float = 0.0


class DIN(nn.Module):
    """``forward(embeddings, dense [B, num_dense]) -> logits [B]``.

    Example::

        >>> shapes = EmbeddingShapes(pooled={"item_id": 4, "user_id": 4},
        ...                          sequences={"hist_item_id": (5, 4)}, num_dense=0)
        >>> model = DIN(shapes, DINConfig(history={"hist_item_id": "item_id"}, hidden=(8,),
        ...                               attention_hidden=(8,)))
        >>> emb = Embeddings(pooled={"item_id": torch.randn(3, 4), "user_id": torch.randn(3, 4)},
        ...                  sequences={"hist_item_id": torch.randn(3, 5, 4)},
        ...                  masks={"hist_item_id": torch.arange(5)[None, :] < torch.tensor([[5], [2], [0]])})
        >>> model(emb, torch.zeros(3, 0)).shape
        torch.Size([3])
    """

    def __init__(self, shapes: EmbeddingShapes, config: DINConfig) -> None:
        super().__init__()
        self.config = config
        self.history = list(config.history)
        self.candidates = [config.history[h] for h in self.history]
        check_history(shapes, config.history)
        dim = sum(shapes.pooled[c] for c in self.candidates)
        self.attention = (
            LocalActivationUnit(dim, config.attention_hidden, config.attention_activation, config.softmax)
            if config.attention
            else None
        )
        self.inputs = FlatInputs(shapes, skip=self.history)
        self.mlp = MLPBlock(self.inputs.width + dim, config.hidden, config.activation, config.dropout)
        self.logit = nn.Linear(self.mlp.out_dim, 1)

    def interest(self, embeddings: Embeddings) -> torch.Tensor:
        """The user's interest in the candidate: the (weighted) sum of the history -> ``[B, D_c]``,
        computed on the real history positions only (packed, :func:`pack_positions`)."""
        require_features(embeddings, self.candidates, self.history)
        candidate = torch.cat([embeddings.pooled[c] for c in self.candidates], dim=-1)
        mask = torch.stack([embeddings.masks[h] for h in self.history]).all(0)
        (rows, _), history = pack_positions([embeddings.sequences[h] for h in self.history], mask)
        if self.attention is not None:
            history = history * self.attention.packed_weights(history, candidate, rows).unsqueeze(-1)
        return segment_sum(history, rows, candidate.shape[0])

    def forward(self, embeddings: Embeddings, dense: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.inputs(embeddings, dense), self.interest(embeddings)], dim=1)
        return self.logit(self.mlp(x)).squeeze(-1)


def check_history(shapes: EmbeddingShapes, history: dict[str, str]) -> None:
    """Raise a ``ValueError`` unless every history feature is a sequence of ``shapes`` whose dim
    equals its candidate's (a pooled feature) and all history features share one length."""
    if not history:
        raise ValueError("DINConfig.history is empty; map each history sequence to its candidate, "
                         "e.g. {'hist_item_id': 'item_id'}")
    for seq, cand in history.items():
        if seq not in shapes.sequences:
            raise ValueError(
                f"DIN history feature {seq!r} is not a sequence feature; sequences: {sorted(shapes.sequences)}"
            )
        if cand not in shapes.pooled:
            raise ValueError(
                f"DIN candidate feature {cand!r} (for {seq!r}) is not a pooled feature; pooled: {sorted(shapes.pooled)}"
            )
        if shapes.sequences[seq][1] != shapes.pooled[cand]:
            raise ValueError(
                f"DIN history feature {seq!r} has dim {shapes.sequences[seq][1]} but its candidate {cand!r} has "
                f"dim {shapes.pooled[cand]}; give them one table group or the same embedding_dim"
            )
    lengths = {seq: shapes.sequences[seq][0] for seq in history}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"DIN history features must share one max_len, got {lengths}")
