"""Next-item ranking shared by the sequential models (BERT4Rec, SASRec, Popularity).

Every trainable sequential model is a :class:`SequentialModel`: item embeddings of a
left-aligned sequence in, a training loss or next-item scores over the whole item table out.

Item ids are the rows of the item table group, as the fitted pipeline gives them
(``recsys_embed.features``): ``0`` pads, ``1`` is out-of-vocabulary, ``2..V-1`` are items.
Scores cover all ``V`` rows; only items (ids >= 2) are candidates. The 1-based ranks feed
``recsys_embed.metrics`` (``hit_rate``, ``ndcg``, ``mrr``).

Shape notation: B batch, L history length, V ids (table rows), N sampled negatives.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from recsys_embed.features import FIRST_VALUE_ID, MISSING_ID

PAD_ID = MISSING_ID
FIRST_ITEM_ID = FIRST_VALUE_ID


class SequentialModel(Protocol):
    """What the next-item job needs of a model over an item table of ``rows`` ids (V).

    ``config`` has ``max_len`` (history items the model reads), ``dim`` (D) and
    ``sequence_len`` (the ids one training row keeps, its most recent);
    ``training_loss(items [B, L, D], mask [B, L], ids [B, L], item_vectors [V, D]) -> []``;
    ``score_next(items [B, L, D], mask [B, L], item_vectors [V, D]) -> [B, V]`` (ids 0 and 1
    score ``-inf``). Sequences are left-aligned: items oldest first, padding after them.

    Retrieval form (maximum inner product search): ``query(items [B, L, D], mask [B, L]) -> [B, D']``
    and ``retrieval_items(item_vectors [V, D]) -> [V, D']`` whose inner products are the next-item
    scores, ``query(items, mask) @ retrieval_items(item_vectors).T == score_next(items, mask,
    item_vectors)`` on the item ids (2..V-1).
    """

    config: Any
    rows: int

    def training_loss(
        self, items: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor, item_vectors: torch.Tensor
    ) -> torch.Tensor: ...

    def score_next(self, items: torch.Tensor, mask: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor: ...

    def query(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...

    def retrieval_items(self, item_vectors: torch.Tensor) -> torch.Tensor: ...


def check_items(items: torch.Tensor, rows: int, what: str) -> None:
    """Raise a ``TypeError`` for non-integer ids and an ``IndexError`` for ids outside ``[0, rows)``."""
    if items.dtype.is_floating_point or items.dtype == torch.bool:
        raise TypeError(f"{what} must hold integer item ids, got dtype {items.dtype}")
    if items.numel() and (int(items.min()) < 0 or int(items.max()) >= rows):
        raise IndexError(
            f"{what}: item ids must lie in [0, {rows}) (0 pads, 1 out-of-vocabulary, 2..{rows - 1} items), "
            f"got min {int(items.min())} max {int(items.max())}"
        )


def rank_of(
    scores: torch.Tensor,
    targets: torch.Tensor,
    exclude: torch.Tensor | None = None,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """1-based rank of each target item among the candidates, ``[B]`` float.

    Full ranking (``negatives`` None): the candidates are all items ``2..V-1`` (never the
    padding id 0 nor the out-of-vocabulary id 1), minus the ids in ``exclude [B, L]`` (e.g. the history;
    its padding zeros are ignored) except the target itself. Sampled ranking: the candidates
    are the target and ``negatives [B, N]`` (see :func:`sample_negatives`). Ties count half:
    ``rank = 1 + #higher + #tied / 2``, the expected rank under random tie-breaking.

    Example::

        >>> scores = torch.tensor([[9.0, 9.0, 0.5, 0.9, 0.1, 0.7]])  # ids 0..5: 0 pads, 1 OOV
        >>> rank_of(scores, torch.tensor([5])), rank_of(scores, torch.tensor([5]), exclude=torch.tensor([[3, 0]]))
        (tensor([2.]), tensor([1.]))
        >>> rank_of(scores, torch.tensor([2]), negatives=torch.tensor([[4, 3]]))
        tensor([2.])
    """
    if scores.dim() != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(
            f"expected scores [B, V] and targets [B], got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    check_items(targets, scores.shape[1], "targets")
    if bool((targets < FIRST_ITEM_ID).any()):
        raise ValueError("targets hold the padding id 0 or the out-of-vocabulary id 1; every evaluated row needs a known target item")
    rows = torch.arange(scores.shape[0], device=scores.device)
    target_score = scores[rows, targets].unsqueeze(1)
    if negatives is not None:
        if exclude is not None:
            raise ValueError("pass exclude only for full ranking; sample_negatives already leaves the history out")
        if negatives.dim() != 2 or negatives.shape[0] != scores.shape[0]:
            raise ValueError(f"negatives must be [B, N] with B={scores.shape[0]}, got {tuple(negatives.shape)}")
        if bool((negatives == targets.unsqueeze(1)).any()):
            raise ValueError("negatives contain the target item; draw them with sample_negatives")
        candidate_scores = scores.gather(1, negatives)
        higher = (candidate_scores > target_score).sum(1)
        tied = (candidate_scores == target_score).sum(1)
    else:
        valid = competitors(scores.shape, targets, exclude)
        higher = ((scores > target_score) & valid).sum(1)
        tied = ((scores == target_score) & valid).sum(1)
    return 1.0 + higher.to(scores.dtype) + tied.to(scores.dtype) / 2


def sample_negatives(
    targets: torch.Tensor,
    rows: int,
    num_negatives: int,
    exclude: torch.Tensor | None = None,
    popularity: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``num_negatives`` distinct negative items per row, ``[B, N]`` int64.

    Never the target, padding, the out-of-vocabulary id or an id in ``exclude [B, L]`` (the
    history, as in the BERT4Rec paper's protocol). Uniform over the remaining items, or
    proportional to ``popularity [rows]`` (e.g. ``Popularity.counts``) when given. Builds a
    ``[B, rows]`` weight matrix: call it per evaluation batch.

    Example::

        >>> neg = sample_negatives(torch.tensor([4, 2]), rows=7, num_negatives=2,
        ...                        exclude=torch.tensor([[2, 3], [0, 0]]), generator=torch.Generator().manual_seed(0))
        >>> neg.shape, set(neg[0].tolist()) <= {5, 6}
        (torch.Size([2, 2]), True)
    """
    batch = targets.shape[0]
    size = (batch, rows)
    check_items(targets, rows, "targets")
    if popularity is None:
        weights = torch.ones(size, device=targets.device)
    else:
        if popularity.shape != (rows,):
            raise ValueError(f"popularity must be [rows] = [{rows}], got {tuple(popularity.shape)}")
        weights = popularity.to(torch.float32).clamp(min=0).expand(size).clone()
    weights[~competitors(size, targets, exclude)] = 0.0
    available = (weights > 0).sum(1)
    short = torch.nonzero(available < num_negatives).flatten()
    if short.numel():
        row = int(short[0])
        raise ValueError(
            f"row {row} has only {int(available[row])} items left to sample from (after removing target, "
            f"history{' and items of zero popularity' if popularity is not None else ''}); asked for {num_negatives}"
        )
    return torch.multinomial(weights, num_negatives, replacement=False, generator=generator)


def competitors(
    size: tuple[int, ...] | torch.Size, targets: torch.Tensor, exclude: torch.Tensor | None
) -> torch.Tensor:
    """``[B, V]`` bool, True for the ids a target competes with: items ``2..V-1`` other than
    the target and not in ``exclude [B, L]``."""
    valid = torch.ones(size, dtype=torch.bool, device=targets.device)
    valid[:, :FIRST_ITEM_ID] = False
    if exclude is not None:
        if exclude.dim() != 2 or exclude.shape[0] != size[0]:
            raise ValueError(f"exclude must be [B, L] with B={size[0]}, got {tuple(exclude.shape)}")
        check_items(exclude, size[1], "exclude")
        valid.scatter_(1, exclude.to(torch.int64), False)
    valid[torch.arange(size[0], device=targets.device), targets] = False
    return valid
