"""MLP baseline: every feature's embedding (sequences mean-pooled) and the dense features,
concatenated, through an MLP to one logit. Shape notation: B batch, D embedding dim."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys_embed.models.layers.feedforward import MLPBlock
from recsys_embed.models.layers.pooling import FlatInputs
from recsys_embed.tables.base import Embeddings, EmbeddingShapes


@dataclass
class MLPConfig:
    """``hidden`` layer sizes, their ``activation`` (relu, prelu, dice, gelu) and ``dropout``."""

    hidden: tuple[int, ...] = (256, 128)
    activation: str = "relu"
    dropout: float = 0.0


class MLP(nn.Module):
    """``forward(embeddings, dense [B, num_dense]) -> logits [B]``.

    Example::

        >>> shapes = EmbeddingShapes(pooled={"item_id": 4}, sequences={"hist": (3, 4)}, num_dense=1)
        >>> model = MLP(shapes, MLPConfig(hidden=(8,)))
        >>> emb = Embeddings(pooled={"item_id": torch.randn(2, 4)}, sequences={"hist": torch.randn(2, 3, 4)},
        ...                  masks={"hist": torch.tensor([[True, False, False], [True, True, True]])})
        >>> model(emb, torch.randn(2, 1)).shape
        torch.Size([2])
    """

    def __init__(self, shapes: EmbeddingShapes, config: MLPConfig | None = None) -> None:
        super().__init__()
        self.config = config or MLPConfig()
        self.inputs = FlatInputs(shapes)
        self.mlp = MLPBlock(self.inputs.width, self.config.hidden, self.config.activation, self.config.dropout)
        self.logit = nn.Linear(self.mlp.out_dim, 1)

    def forward(self, embeddings: Embeddings, dense: torch.Tensor) -> torch.Tensor:
        return self.score(self.inputs(embeddings, dense))

    def score(self, flat: torch.Tensor) -> torch.Tensor:
        """Logits ``[B]`` of the flat inputs ``[B, inputs.width]`` (what :class:`FlatInputs` gives),
        for a model that already holds them (AutoInt+ shares its pooled fields)."""
        return self.logit(self.mlp(flat)).squeeze(-1)
