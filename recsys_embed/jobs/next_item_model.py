"""A next-item model: the item sequence feature of a table layout, then a sequential model
(BERT4Rec or SASRec: :class:`~recsys_embed.models.SequentialModel`) whose output layer is tied to
the item table group; trained by the :class:`~recsys_embed.jobs.trainer.Trainer` (``loss``: the
model's training loss on a pipeline :class:`~recsys_embed.batch.Batch`) and evaluated by exact
full ranking over the item table (``evaluate``: HR@k, NDCG@k, MRR@k of held-out items).

One read of the whole item table per step, ``E = tables.table_vectors(group)`` ``[V, D]``,
serves both sides of the tied model: the input embeddings are its rows at the batch's ids and
the output layer is ``E`` itself, so the fused optimizer of the table gets one update per step
with the sum of both gradients (as a tied ``nn.Embedding`` would).

Shape notation: B batch, L the feature's ``max_len``, D the item dim, V table rows, U users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recsys_embed import metrics
from recsys_embed.batch import Batch
from recsys_embed.features import Schema
from recsys_embed.jobs.ranking_model import dense_param_groups
from recsys_embed.models import Popularity, SequentialModel, rank_of, sample_negatives
from recsys_embed.tables.jagged import sequence_grid

NEGATIVE_SAMPLING = ("uniform", "popularity")
SCORES_PER_EVAL_BATCH = 1 << 22  # eval rows x table rows per scoring call (16 MiB of float32)


@dataclass
class RankingProtocol:
    """How held-out items are ranked: ``ks`` cut-offs; ``negatives`` 0 ranks the target among
    all items, N > 0 among itself and N negatives drawn ``negative_sampling="uniform"`` or
    ``"popularity"`` (by training counts); ``exclude_history``: the user's items are no
    candidates; ``seed`` draws the negatives (the same for every model)."""

    ks: tuple[int, ...] = (1, 5, 10)
    negatives: int = 0
    negative_sampling: str = "uniform"
    exclude_history: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self.ks = tuple(self.ks)
        if not self.ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in self.ks):
            raise ValueError(f"ks must be a non-empty list of positive integers, got {list(self.ks)}")
        if self.negatives < 0:
            raise ValueError(f"negatives must be >= 0, got {self.negatives}")
        if self.negative_sampling not in NEGATIVE_SAMPLING:
            raise ValueError(f"negative_sampling must be one of {list(NEGATIVE_SAMPLING)}, got {self.negative_sampling!r}")

    @property
    def selection_k(self) -> int:
        """The k of the metric that picks the best epoch: 10, or the largest k without 10."""
        return 10 if 10 in self.ks else max(self.ks)


@dataclass
class NextItemSplit:
    """One held-out item per user: the user's history as jagged ids (``values [N]``, oldest
    first, ``lengths [U]``) and the ``targets [U]`` that followed it (pipeline ids)."""

    values: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return self.targets.numel()

    def chunks(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(values, lengths, targets)`` of consecutive users, ``size`` at a time."""
        offsets = np.r_[0, np.cumsum(self.lengths.numpy())]
        for start in range(0, len(self), size):
            stop = min(start + size, len(self))
            yield self.values[offsets[start] : offsets[stop]], self.lengths[start:stop], self.targets[start:stop]


def history_grid(values: torch.Tensor, lengths: torch.Tensor, max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Jagged histories as left-aligned ids ``[B, L]`` (0 padded) and their mask ``[B, L]``,
    each keeping its most recent ``max_len`` ids (all of them with None); L is the longest
    kept history (at least 1), so a batch of short histories computes no padding columns."""
    longest = max(int(lengths.max()) if lengths.numel() else 0, 1)
    width = longest if max_len is None else min(longest, max_len)
    grid, present = sequence_grid(values, lengths, width)
    return grid.T, present.T


def evaluate_next_item(
    score_next: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    split: NextItemSplit,
    protocol: RankingProtocol,
    rows: int,
    popularity: torch.Tensor | None = None,
) -> dict[str, float]:
    """HR@k, NDCG@k and MRR@k (keys ``hr@10`` ...) of ``score_next(values, lengths) -> [B, V]``
    on ``split``; ``popularity [V]`` weighs the negatives of ``negative_sampling="popularity"``."""
    generator = torch.Generator().manual_seed(protocol.seed)
    weights = popularity if protocol.negative_sampling == "popularity" else None
    ranks = []
    for values, lengths, targets in split.chunks(max(1, SCORES_PER_EVAL_BATCH // rows)):
        scores = score_next(values, lengths)
        exclude = history_grid(values, lengths)[0] if protocol.exclude_history else None
        if protocol.negatives:
            negatives = sample_negatives(targets, rows, protocol.negatives, exclude, weights, generator)
            ranks.append(rank_of(scores, targets, negatives=negatives))
        else:
            ranks.append(rank_of(scores, targets, exclude=exclude))
    all_ranks = torch.cat(ranks).numpy()
    out: dict[str, float] = {}
    for name, metric in (("hr", metrics.hit_rate), ("ndcg", metrics.ndcg), ("mrr", metrics.mrr)):
        out.update({f"{name}@{k}": metric(all_ranks, k) for k in protocol.ks})
    return out


class NextItemModel(nn.Module):
    """``tables`` (a layout with the sequence feature ``feature``) then a sequential ``model``.

    ``loss(batch)``: the model's training loss on the feature's ids (a row keeps the most
    recent ``model.config.sequence_len``). ``evaluate(split)``: full ranking by ``protocol`` of the next
    item after each history's most recent ``model.config.max_len`` items; ``popularity``
    (training counts) weighs popularity-sampled negatives.
    """

    def __init__(
        self,
        tables: nn.Module,
        model: SequentialModel,
        schema: Schema,
        feature: str,
        protocol: RankingProtocol | None = None,
        popularity: Popularity | None = None,
    ) -> None:
        super().__init__()
        spec = schema[feature]
        if not spec.is_sequence:
            raise ValueError(f"next-item model: feature {feature!r} must be a sequence feature, got kind={spec.kind.value!r}")
        if spec.max_len != model.config.sequence_len:
            raise ValueError(
                f"next-item model: feature {feature!r} keeps max_len={spec.max_len} ids, {type(model).__name__} "
                f"trains on {model.config.sequence_len} a row"
            )
        self.tables = tables
        self.model = model  # type: ignore[assignment]
        self.feature = feature
        self.group: str = spec.table  # type: ignore[assignment]
        self.protocol = protocol or RankingProtocol()
        self.popularity = popularity

    @property
    def rows(self) -> int:
        return self.model.rows

    def item_vectors(self) -> torch.Tensor:
        """``[V, D]``: every row of the item table group, read through the layout."""
        return self.tables.table_vectors(self.group)

    @staticmethod
    def embed(
        vectors: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor, max_len: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ids ``[B, L]`` (each row's most recent ``max_len``), their embeddings ``[B, L, D]``
        (rows of ``vectors``) and mask ``[B, L]``."""
        ids, mask = history_grid(values.to(vectors.device), lengths.to(vectors.device), max_len)
        return ids, vectors[ids], mask

    def loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's training loss on ``batch`` and the real positions ``[B, L]``."""
        history = batch.sparse[self.feature]
        vectors = self.item_vectors()
        ids, items, mask = self.embed(vectors, history.values(), history.lengths(), self.model.config.sequence_len)
        return self.model.training_loss(items, mask, ids, vectors), mask

    @torch.no_grad()
    def score_next(self, values: torch.Tensor, lengths: torch.Tensor, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[B, V]`` of the next item after each jagged history of ids."""
        vectors = self.item_vectors() if vectors is None else vectors
        _, items, mask = self.embed(vectors, values, lengths, self.model.config.max_len)
        return self.model.score_next(items, mask, vectors)

    @torch.no_grad()
    def query_vectors(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Retrieval queries ``[B, D']`` of jagged histories (the model's ``query``): their inner
        products with :meth:`retrieval_vectors` are the next-item scores of :meth:`score_next`."""
        _, items, mask = self.embed(self.item_vectors(), values, lengths, self.model.config.max_len)
        return self.model.query(items, mask)

    @torch.no_grad()
    def retrieval_vectors(self) -> torch.Tensor:
        """The item side of retrieval ``[V, D']`` (the model's ``retrieval_items`` of :meth:`item_vectors`;
        rows as the table's: items from ``FIRST_VALUE_ID`` on). SASRec: the table (D' = D);
        BERT4Rec: ``[e_i, b_i]`` with the output bias (D' = D + 1)."""
        return self.model.retrieval_items(self.item_vectors())

    @torch.no_grad()
    def evaluate(self, split: NextItemSplit) -> dict[str, float]:
        """HR@k, NDCG@k, MRR@k of ``split``'s targets (:func:`evaluate_next_item`), in eval mode."""
        was_training = self.training
        self.eval()
        try:
            vectors = self.item_vectors()  # one read of the table for the whole evaluation
            counts = None if self.popularity is None else self.popularity.counts
            return evaluate_next_item(lambda v, n: self.score_next(v, n, vectors), split, self.protocol, self.rows, counts)
        finally:
            self.train(was_training)

    def dense_param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Optimizer param groups for everything the fused table kernel does not update."""
        return dense_param_groups(self, self.tables, lr, weight_decay)
