"""FM (Rendle 2010, "Factorization Machines") and DeepFM (Guo et al. 2017, "DeepFM: A
Factorization-Machine based Neural Network for CTR Prediction").

FM: ``y = w_0 + <w, x> + sum_{i < j} <v_i, v_j>`` over F fields of one dim D:

- fields ``v``: every pooled feature's embedding, every sequence feature mean-pooled over its
  mask (one field each), and each dense feature ``j`` as its value times a learned vector
  ``u_j`` (the usual embedding of a numeric field), so dense features join the interactions.
  All embeddings must share D (:meth:`FlatInputs.common_dim` says which differ);
- first order ``w_0 + <w, x>``: one linear layer (its bias is ``w_0``) over the flat input ``x``,
  the concatenated field embeddings and raw dense values. Rendle's ``w_i`` is a scalar per id; our
  tables give each id a D-dim vector only, so an id's first-order weight is ``<w_f, e_id>``, a
  learned linear read-out of its embedding (shared with the second-order term);
- second order: :func:`fm_pairwise`, in ``O(F * D)``.

DeepFM adds a deep part, an MLP over the same flat input (the same embeddings: nothing is
learned twice), whose logit is summed with FM's.

Shape notation: B batch, F fields (pooled + sequence + dense features), D embedding dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys_embed.models.layers.interaction import fm_pairwise
from recsys_embed.models.layers.pooling import FlatInputs, stack_fields
from recsys_embed.models.mlp import MLP, MLPConfig
from recsys_embed.tables.base import Embeddings, EmbeddingShapes


@dataclass
class FMConfig:
    """FM has no hyper-parameters of its own: the field dim is the tables' embedding dim."""


@dataclass
class DeepFMConfig:
    """DeepFM's deep part: ``dnn`` hidden sizes, their ``dnn_activation`` and ``dnn_dropout``."""

    dnn: tuple[int, ...] = (256, 128)
    dnn_activation: str = "relu"
    dnn_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not self.dnn or min(self.dnn) <= 0 or not 0.0 <= self.dnn_dropout < 1.0:
            raise ValueError(
                f"DeepFMConfig needs dnn sizes > 0 (at least one; FM is DeepFM without its deep part) and dnn_dropout "
                f"in [0, 1), got dnn={self.dnn} dnn_dropout={self.dnn_dropout}"
            )


class FM(nn.Module):
    """``forward(embeddings, dense [B, num_dense]) -> logits [B]``.

    Example::

        >>> shapes = EmbeddingShapes(pooled={"user_id": 4, "item_id": 4}, sequences={"hist": (3, 4)}, num_dense=2)
        >>> model = FM(shapes)
        >>> emb = Embeddings(pooled={"user_id": torch.randn(5, 4), "item_id": torch.randn(5, 4)},
        ...                  sequences={"hist": torch.randn(5, 3, 4)},
        ...                  masks={"hist": torch.ones(5, 3, dtype=torch.bool)})
        >>> model.fields(emb, torch.randn(5, 2)).shape, model(emb, torch.randn(5, 2)).shape
        (torch.Size([5, 5, 4]), torch.Size([5]))
    """

    def __init__(self, shapes: EmbeddingShapes, config: FMConfig | None = None) -> None:
        super().__init__()
        self.config = config or FMConfig()
        self.inputs = FlatInputs(shapes)
        self.numeric = nn.Parameter(torch.randn(shapes.num_dense, self.inputs.common_dim("FM")) * 0.05)
        self.linear = nn.Linear(self.inputs.width, 1)

    def fields(self, embeddings: Embeddings, dense: torch.Tensor) -> torch.Tensor:
        """The field vectors ``[B, F, D]``: pooled features, sequences, then dense features."""
        return stack_fields(self.inputs.features(embeddings, dense), dense, self.numeric)

    def forward(self, embeddings: Embeddings, dense: torch.Tensor) -> torch.Tensor:
        vectors = self.inputs.features(embeddings, dense)
        return self.score(vectors, dense, self.inputs.flat(vectors, dense))

    def score(self, vectors: list[torch.Tensor], dense: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """Logits ``[B]`` of the feature vectors (``inputs.features``) and their flat input
        (``inputs.flat``), for a model that already holds them (DeepFM)."""
        return self.linear(flat).squeeze(-1) + fm_pairwise(stack_fields(vectors, dense, self.numeric))


class DeepFM(nn.Module):
    """``forward(embeddings, dense [B, num_dense]) -> logits [B]``: FM's logit plus an MLP's,
    both on the same embeddings.

    Example::

        >>> shapes = EmbeddingShapes(pooled={"user_id": 4, "item_id": 4}, num_dense=1)
        >>> model = DeepFM(shapes, DeepFMConfig(dnn=(8,)))
        >>> emb = Embeddings(pooled={"user_id": torch.randn(5, 4), "item_id": torch.randn(5, 4)})
        >>> model(emb, torch.randn(5, 1)).shape
        torch.Size([5])
    """

    def __init__(self, shapes: EmbeddingShapes, config: DeepFMConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DeepFMConfig()
        self.fm = FM(shapes)
        self.dnn = MLP(shapes, MLPConfig(config.dnn, config.dnn_activation, config.dnn_dropout))

    def forward(self, embeddings: Embeddings, dense: torch.Tensor) -> torch.Tensor:
        vectors = self.fm.inputs.features(embeddings, dense)  # each sequence is pooled once, for both parts
        flat = self.fm.inputs.flat(vectors, dense)
        return self.fm.score(vectors, dense, flat) + self.dnn.score(flat)
