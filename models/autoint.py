"""AutoInt and AutoInt+ (Song et al. 2019, "AutoInt: Automatic Feature Interaction Learning
via Self-Attentive Neural Networks").

Every input becomes a field vector of one common dim: pooled embeddings (projected by a
linear map when their dim differs), sequence embeddings mean-pooled over their mask (and
projected likewise), and each dense feature as its value times a learned vector. Stacked
interacting layers (multi-head self-attention across fields, residual, ReLU) model the
feature interactions (the residual a learned projection ``W_res``, as in the paper, or the
identity: ``residual``); a linear output layer over the flattened fields gives the logit.
AutoInt+ (``dnn`` non-empty) adds a parallel MLP over the raw inputs whose logit is summed in;
each sequence is pooled once per forward and feeds both parts.

Shape notation: B batch, F fields (pooled + sequence + dense features), d field dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys_embed.models.layers.interaction import RESIDUALS, InteractingLayer
from recsys_embed.models.layers.pooling import FlatInputs, stack_fields
from recsys_embed.models.mlp import MLP, MLPConfig
from recsys_embed.tables.base import Embeddings, EmbeddingShapes


@dataclass
class AutoIntConfig:
    """AutoInt hyper-parameters.

    Args:
        field_dim: the common field dim d fed to the first interacting layer.
        num_layers, num_heads, head_dim: the interacting layers (each outputs ``num_heads * head_dim``).
        dnn: hidden sizes of AutoInt+'s parallel MLP; empty for plain AutoInt.
        dnn_activation, dnn_dropout: that MLP's activation and dropout.
        residual: ``"projection"`` (the paper's learned ``W_res`` in every interacting layer) or
            ``"identity"`` (``W_res`` only where a layer changes the width: models saved before
            this option existed, whose manifests lack the key, load with it).
    """

    field_dim: int = 16
    num_layers: int = 3
    num_heads: int = 2
    head_dim: int = 16
    dnn: tuple[int, ...] = ()
    dnn_activation: str = "relu"
    dnn_dropout: float = 0.0
    residual: str = "projection"

    def __post_init__(self) -> None:
        if self.residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {RESIDUALS}, got {self.residual!r}")
        if min(self.field_dim, self.num_heads, self.head_dim) <= 0 or self.num_layers < 0:
            raise ValueError(
                f"AutoIntConfig needs field_dim, num_heads, head_dim > 0 and num_layers >= 0, got {self.field_dim}, "
                f"{self.num_heads}, {self.head_dim}, {self.num_layers}"
            )


class AutoInt(nn.Module):
    """``forward(embeddings, dense [B, num_dense]) -> logits [B]``.

    Example::

        >>> shapes = EmbeddingShapes(pooled={"user_id": 8, "item_id": 4}, sequences={"hist": (3, 4)}, num_dense=2)
        >>> model = AutoInt(shapes, AutoIntConfig(field_dim=4, num_layers=2, head_dim=4, dnn=(16,)))
        >>> emb = Embeddings(pooled={"user_id": torch.randn(5, 8), "item_id": torch.randn(5, 4)},
        ...                  sequences={"hist": torch.randn(5, 3, 4)},
        ...                  masks={"hist": torch.ones(5, 3, dtype=torch.bool)})
        >>> model.fields(emb, torch.randn(5, 2)).shape, model(emb, torch.randn(5, 2)).shape
        (torch.Size([5, 5, 4]), torch.Size([5]))
    """

    def __init__(self, shapes: EmbeddingShapes, config: AutoIntConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or AutoIntConfig()
        d = config.field_dim
        self.inputs = FlatInputs(shapes)
        dims = self.inputs.dims.values()
        num_fields = len(dims) + shapes.num_dense
        if num_fields == 0:
            raise ValueError("AutoInt needs at least one feature; the shapes hold none")
        self.project = nn.ModuleList(nn.Identity() if dim == d else nn.Linear(dim, d, bias=False) for dim in dims)
        self.numeric = nn.Parameter(torch.randn(shapes.num_dense, d) * 0.05)
        layers, width = [], d
        for _ in range(config.num_layers):
            layers.append(InteractingLayer(width, config.head_dim, config.num_heads, config.residual))
            width = layers[-1].out_dim
        self.interacting = nn.Sequential(*layers)
        self.output = nn.Linear(num_fields * width, 1)
        self.dnn = (
            MLP(shapes, MLPConfig(config.dnn, config.dnn_activation, config.dnn_dropout)) if config.dnn else None
        )

    def fields(self, embeddings: Embeddings, dense: torch.Tensor) -> torch.Tensor:
        """The field vectors ``[B, F, d]``: pooled features, sequences, then dense features."""
        return self._fields(self.inputs.features(embeddings, dense), dense)

    def _fields(self, vectors: list[torch.Tensor], dense: torch.Tensor) -> torch.Tensor:
        return stack_fields([project(x) for project, x in zip(self.project, vectors)], dense, self.numeric)

    def forward(self, embeddings: Embeddings, dense: torch.Tensor) -> torch.Tensor:
        vectors = self.inputs.features(embeddings, dense)  # each sequence is pooled once, for both parts
        logit = self.output(self.interacting(self._fields(vectors, dense)).flatten(1)).squeeze(-1)
        if self.dnn is not None:
            logit = logit + self.dnn.score(self.inputs.flat(vectors, dense))
        return logit
