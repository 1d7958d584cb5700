"""A ranking model: a table layout followed by a model, ``Batch -> logits``."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_embed import metrics
from recsys_embed.batch import Batch
from recsys_embed.errors import DataError
from recsys_embed.models import mini_batch_aware_l2
from recsys_embed.tables.base import Embeddings
from recsys_embed.tables.contract import TableLayout
from recsys_embed.tables.frequencies import row_vectors


class RankingModel(nn.Module):
    """``tables`` (any :class:`TableLayout`: ``KeyedJaggedTensor -> Embeddings``) then ``model``
    (``(Embeddings, dense [B, n_dense]) -> logits [B]``).

    The layout's contract hooks shape training: ``training_views(emb)`` gives the views whose
    losses are summed (Matryoshka: one per prefix), ``regularization_loss()`` is added to the
    loss (OptEmbed thresholds), ``dense_parameters()`` gives extra optimizer param groups and
    ``fused_parameters()`` those its kernel updates itself.
    :meth:`use_mini_batch_aware_l2` adds DIN's mini-batch aware L2 on the table rows.
    """

    def __init__(self, tables: TableLayout, model: nn.Module) -> None:
        super().__init__()
        self.tables = tables
        self.model = model
        self.mba_l2 = 0.0
        self.row_frequencies: torch.Tensor | None
        self.register_buffer("row_frequencies", None, persistent=False)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model(self.tables(batch.sparse), batch.dense)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss and the logits of the full view, ``(loss, logits [B])``."""
        emb = self.tables(batch.sparse)
        logits = [self.model(view, batch.dense) for view in self.tables.training_views(emb)]
        loss = sum(F.binary_cross_entropy_with_logits(lg, batch.labels) for lg in logits)
        extra = self.tables.regularization_loss()
        if extra is not None:
            loss = loss + extra
        if self.mba_l2:
            loss = loss + self.mba_l2 * self.mini_batch_aware_l2(batch, emb)
        return loss, logits[-1]

    @torch.no_grad()
    def predict(self, data: Iterable[Batch]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Probabilities, labels and groups over a stream, in stream order (in eval mode)."""
        was_training = self.training
        self.eval()
        scores, labels, groups = [], [], []
        for batch in data:
            scores.append(torch.sigmoid(self(batch)).cpu().numpy())
            labels.append(batch.labels.cpu().numpy())
            if batch.groups is not None:
                groups.append(batch.groups.cpu().numpy())
        self.train(was_training)
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
        return cat(scores), cat(labels), (cat(groups) if groups else None)

    def evaluate(self, data: Iterable[Batch]) -> dict[str, float]:
        """AUC, logloss and (when batches carry groups) GAUC over a stream."""
        scores, labels, groups = self.predict(data)
        if not len(labels):
            raise DataError("no rows to evaluate: the evaluation data is empty (AUC and logloss need at least one row)")
        out = {"auc": metrics.auc(scores, labels), "logloss": metrics.logloss(scores, labels), "rows": float(len(labels))}
        if groups is not None:
            out["gauc"] = metrics.gauc(scores, labels, groups)
        return out

    def use_mini_batch_aware_l2(self, weight: float, frequencies: torch.Tensor) -> None:
        """Add ``weight * sum_j ||w_j||^2 / n_j`` to the training loss (DIN, Zhou et al. 2018,
        eq. 4-5): j runs over the distinct table rows the batch reads, each once; ``frequencies``
        ``[tables.num_rows()]`` holds n_j, how often the training data reads row j
        (:func:`recsys_embed.tables.frequencies.row_frequencies`; the Trainer counts them when
        ``TrainerConfig.mba_l2 > 0``). ``weight`` 0 turns it off."""
        if weight < 0:
            raise ValueError(f"mini-batch aware L2 weight must be >= 0, got {weight}")
        rows = self.tables.num_rows()
        if frequencies.shape != (rows,):
            raise ValueError(f"row frequencies must have shape ({rows},), one count per layout row; got {tuple(frequencies.shape)}")
        self.mba_l2 = float(weight)
        self.row_frequencies = frequencies.to(next(self.parameters(), frequencies).device)

    def mini_batch_aware_l2(self, batch: Batch, emb: Embeddings) -> torch.Tensor:
        """``sum_j ||w_j||^2 / n_j`` over the distinct rows j that ``emb`` (this batch's table
        output) read, taken on ``emb`` so the gradient reaches the rows through the table's
        fused optimizer."""
        if self.row_frequencies is None:
            raise ValueError("mini-batch aware L2 needs the row frequencies: call use_mini_batch_aware_l2(weight, frequencies)")
        penalty = torch.zeros((), device=batch.dense.device)
        for vectors, rows in row_vectors(self.tables, batch.sparse, emb):
            penalty = penalty + mini_batch_aware_l2(vectors, rows, self.row_frequencies[rows])
        return penalty

    def dense_param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Optimizer param groups for everything the fused table kernel does not update."""
        return dense_param_groups(self, self.tables, lr, weight_decay)


def dense_param_groups(module: nn.Module, tables: TableLayout, lr: float, weight_decay: float) -> list[dict]:
    """Optimizer param groups for the parameters of ``module`` that the fused kernel of its
    table layout ``tables`` does not update: one group with ``lr`` and ``weight_decay``, then
    the layout's own groups (its ``dense_parameters()``)."""
    extra = tables.dense_parameters()
    taken = {id(p) for group in extra for p in group["params"]}
    kernel = {id(p) for p in tables.fused_parameters()}
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in taken and id(p) not in kernel]
    return [{"params": rest, "lr": lr, "weight_decay": weight_decay}, *extra]
