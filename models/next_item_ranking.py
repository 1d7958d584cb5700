"""Next-item ranking shared by the sequential models (BERT4Rec, Popularity).

Item id layout of every sequential model: ``0`` pads, ``1..num_items`` are items, and
``num_items + 1`` is BERT4Rec's mask token; scores cover all ``V = num_items + 2`` ids.
(With ids from ``recsys_embed.pipelines``, the out-of-vocabulary id 1 is simply one more
item and ``num_items = table rows - 1``.) The 1-based ranks feed ``recsys_embed.metrics``
(``hit_rate``, ``ndcg``, ``mrr``).

Shape notation: B batch, L history length, V ids (num_items + 2), N sampled negatives.
"""

from __future__ import annotations

import torch

PAD_ID = 0


def check_items(items: torch.Tensor, num_items: int, what: str, allow_mask: bool = False) -> None:
    """Raise a ``TypeError`` for non-integer ids and an ``IndexError`` for ids outside
    ``[0, num_items]`` (``[0, num_items + 1]`` with ``allow_mask``)."""
    if items.dtype.is_floating_point or items.dtype == torch.bool:
        raise TypeError(f"{what} must hold integer item ids, got dtype {items.dtype}")
    high = num_items + 1 if allow_mask else num_items
    if items.numel() and (int(items.min()) < 0 or int(items.max()) > high):
        raise IndexError(
            f"{what}: item ids must lie in [0, {high}] (0 pads, 1..{num_items} items"
            f"{', ' + str(num_items + 1) + ' the mask token' if allow_mask else ''}), "
            f"got min {int(items.min())} max {int(items.max())}"
        )


def rank_of(
    scores: torch.Tensor,
    targets: torch.Tensor,
    exclude: torch.Tensor | None = None,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """1-based rank of each target item among the candidates, ``[B]`` float.

    Full ranking (``negatives`` None): the candidates are all items ``1..V-2`` (never the
    padding id 0 nor the mask id V-1), minus the ids in ``exclude [B, L]`` (e.g. the history;
    its padding zeros are ignored) except the target itself. Sampled ranking: the candidates
    are the target and ``negatives [B, N]`` (see :func:`sample_negatives`). Ties count half:
    ``rank = 1 + #higher + #tied / 2``, the expected rank under random tie-breaking.

    Example::

        >>> scores = torch.tensor([[9.0, 0.5, 0.9, 0.1, 0.7, 9.0]])  # ids 0..5, 5 is the mask
        >>> rank_of(scores, torch.tensor([4])), rank_of(scores, torch.tensor([4]), exclude=torch.tensor([[2, 0]]))
        (tensor([2.]), tensor([1.]))
        >>> rank_of(scores, torch.tensor([1]), negatives=torch.tensor([[3, 2]]))
        tensor([2.])
    """
    if scores.dim() != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(
            f"expected scores [B, V] and targets [B], got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    check_items(targets, scores.shape[1] - 2, "targets")
    if bool((targets == PAD_ID).any()):
        raise ValueError("targets hold the padding id 0; every evaluated row needs a real target item")
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
    num_items: int,
    num_negatives: int,
    exclude: torch.Tensor | None = None,
    popularity: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``num_negatives`` distinct negative items per row, ``[B, N]`` int64.

    Never the target, padding, the mask id or an id in ``exclude [B, L]`` (the history, as
    in the BERT4Rec paper's protocol). Uniform over the remaining items, or proportional to
    ``popularity [num_items + 2]`` (e.g. ``Popularity.counts``) when given. Builds a
    ``[B, num_items + 2]`` weight matrix: call it per evaluation batch.

    Example::

        >>> neg = sample_negatives(torch.tensor([3, 1]), num_items=5, num_negatives=2,
        ...                        exclude=torch.tensor([[1, 2], [0, 0]]), generator=torch.Generator().manual_seed(0))
        >>> neg.shape, set(neg[0].tolist()) <= {4, 5}
        (torch.Size([2, 2]), True)
    """
    batch = targets.shape[0]
    size = (batch, num_items + 2)
    check_items(targets, num_items, "targets")
    if popularity is None:
        weights = torch.ones(size, device=targets.device)
    else:
        if popularity.shape != (num_items + 2,):
            raise ValueError(f"popularity must be [num_items + 2] = [{num_items + 2}], got {tuple(popularity.shape)}")
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
    """``[B, V]`` bool, True for the ids a target competes with: items ``1..V-2`` other than
    the target and not in ``exclude [B, L]``."""
    valid = torch.ones(size, dtype=torch.bool, device=targets.device)
    valid[:, PAD_ID] = False
    valid[:, size[1] - 1] = False
    if exclude is not None:
        if exclude.dim() != 2 or exclude.shape[0] != size[0]:
            raise ValueError(f"exclude must be [B, L] with B={size[0]}, got {tuple(exclude.shape)}")
        check_items(exclude, size[1] - 2, "exclude", allow_mask=True)
        valid.scatter_(1, exclude.to(torch.int64), False)
    valid[torch.arange(size[0], device=targets.device), targets] = False
    return valid
