"""A ranking model: a table layout followed by a model, ``Batch -> logits``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys_embed.batch import Batch
from recsys_embed.tables.base import FusedTables


class RankingModel(nn.Module):
    """``tables`` (any layout: ``KeyedJaggedTensor -> Embeddings``) then ``model``
    (``(Embeddings, dense [B, n_dense]) -> logits [B]``).

    Layout hooks, used when present: ``training_views(emb)`` returns several views of the
    embeddings whose losses are summed (Matryoshka), ``regularization_loss()`` is added to
    the loss (OptEmbed thresholds), ``dense_parameters()`` gives extra optimizer param groups.
    """

    def __init__(self, tables: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.tables = tables
        self.model = model

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model(self.tables(batch.sparse), batch.dense)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss and the logits of the full view, ``(loss, logits [B])``."""
        emb = self.tables(batch.sparse)
        views = self.tables.training_views(emb) if hasattr(self.tables, "training_views") else [emb]
        logits = [self.model(view, batch.dense) for view in views]
        loss = sum(F.binary_cross_entropy_with_logits(lg, batch.labels) for lg in logits)
        if hasattr(self.tables, "regularization_loss"):
            loss = loss + self.tables.regularization_loss()
        return loss, logits[-1]

    def dense_param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Optimizer param groups for everything the fused table kernel does not update."""
        extra = self.tables.dense_parameters() if hasattr(self.tables, "dense_parameters") else []
        taken = {id(p) for group in extra for p in group["params"]}
        kernel = {id(p) for m in self.tables.modules() if isinstance(m, FusedTables) for p in m.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in taken and id(p) not in kernel]
        return [{"params": rest, "lr": lr, "weight_decay": weight_decay}, *extra]
