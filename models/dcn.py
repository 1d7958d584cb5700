"""DCN-v2 (Wang et al. 2021, "DCN V2: Improved Deep & Cross Network and Practical Lessons for
Web-scale Learning to Rank Systems").

The input ``x_0 [B, W]`` is the flat input of the MLP (:class:`FlatInputs`: every pooled
embedding, every sequence mean-pooled over its mask, the raw dense values; embedding dims may
differ). A cross network (:mod:`~recsys_embed.models.layers.cross`: ``x_{l+1} = x_0 ⊙ (W_l x_l
+ b_l) + x_l``, full rank or a low-rank mixture of experts) and a deep network (an MLP) are
combined in one of the paper's two structures:

- ``stacked`` (fig. 1b): ``logit = w^T deep(cross(x_0))``;
- ``parallel`` (fig. 1a): ``logit = w^T [cross(x_0); deep(x_0)]``.

Shape notation: B batch, W flat input width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys_embed.models.layers.cross import CrossNetwork
from recsys_embed.models.layers.feedforward import MLPBlock
from recsys_embed.models.layers.pooling import FlatInputs
from recsys_embed.tables.base import Embeddings, EmbeddingShapes

STRUCTURES = ("stacked", "parallel")


@dataclass
class DCNv2Config:
    """DCN-v2 hyper-parameters.

    Args:
        cross_layers: number of cross layers L (crosses up to degree L + 1).
        low_rank: the rank r of each expert; None (the default) for full-rank ``W x W`` layers.
        experts: the number K of low-rank experts per layer (only with ``low_rank``).
        structure: ``"stacked"`` (deep after cross) or ``"parallel"`` (side by side).
        dnn, dnn_activation, dnn_dropout: the deep network's hidden sizes (may be empty: cross only), activation, dropout.
    """

    cross_layers: int = 3
    low_rank: int | None = None
    experts: int = 1
    structure: str = "stacked"
    dnn: tuple[int, ...] = (256, 128)
    dnn_activation: str = "relu"
    dnn_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {self.structure!r}")
        if self.cross_layers < 0 or self.experts <= 0 or (self.low_rank is not None and self.low_rank <= 0):
            raise ValueError(
                f"DCNv2Config needs cross_layers >= 0, experts > 0 and low_rank > 0 (or null: full rank), got "
                f"{self.cross_layers}, {self.experts}, {self.low_rank}"
            )
        if self.experts > 1 and self.low_rank is None:
            raise ValueError(f"experts: {self.experts} needs low_rank (the experts are low-rank crosses)")


class DCNv2(nn.Module):
    """``forward(embeddings, dense [B, num_dense]) -> logits [B]``.

    Example::

        >>> shapes = EmbeddingShapes(pooled={"user_id": 8, "item_id": 4}, sequences={"hist": (3, 4)}, num_dense=2)
        >>> emb = Embeddings(pooled={"user_id": torch.randn(5, 8), "item_id": torch.randn(5, 4)},
        ...                  sequences={"hist": torch.randn(5, 3, 4)},
        ...                  masks={"hist": torch.ones(5, 3, dtype=torch.bool)})
        >>> config = DCNv2Config(cross_layers=2, low_rank=4, experts=2, structure="parallel", dnn=(16,))
        >>> DCNv2(shapes, config)(emb, torch.randn(5, 2)).shape
        torch.Size([5])
    """

    def __init__(self, shapes: EmbeddingShapes, config: DCNv2Config | None = None) -> None:
        super().__init__()
        self.config = config = config or DCNv2Config()
        self.inputs = FlatInputs(shapes)
        width = self.inputs.width
        if width == 0:
            raise ValueError("DCNv2 needs at least one feature; the shapes hold none")
        self.cross = CrossNetwork(width, config.cross_layers, config.low_rank, config.experts)
        self.deep = MLPBlock(width, config.dnn, config.dnn_activation, config.dnn_dropout)
        self.parallel = config.structure == "parallel"
        self.output = nn.Linear(self.deep.out_dim + (width if self.parallel else 0), 1)

    def forward(self, embeddings: Embeddings, dense: torch.Tensor) -> torch.Tensor:
        x0 = self.inputs(embeddings, dense)
        if self.parallel:
            return self.output(torch.cat([self.cross(x0), self.deep(x0)], dim=1)).squeeze(-1)
        return self.output(self.deep(self.cross(x0))).squeeze(-1)
