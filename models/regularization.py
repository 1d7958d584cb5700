"""Mini-batch aware L2 regularisation (Zhou et al. 2018, DIN, section 4.1).

Only the embedding rows a mini-batch touches are penalised, each unique row once, scaled by
the inverse of how often its id occurs in the training set:
``sum over unique ids j in the batch of ||w_j||^2 / n_j``. The job multiplies by lambda and
adds it to the loss. Gradients reach each touched row through the table's lookup output, so
this works with fused-optimizer tables (fbgemm TBE), whose weights autograd never sees.
"""

from __future__ import annotations

import torch


def mini_batch_aware_l2(
    embeddings: torch.Tensor, ids: torch.Tensor, frequency: torch.Tensor | None = None
) -> torch.Tensor:
    """The mini-batch aware L2 penalty, a scalar.

    Args:
        embeddings: ``[N, D]`` looked-up rows, ``embeddings[i]`` the row of ``ids[i]`` (e.g. a
            categorical feature's pooled output, N = B, or a flattened sequence's real items).
        ids: ``[N]`` the row ids; repeated ids are counted once (their first occurrence).
        frequency: ``[N]`` training-set count of ``ids[i]`` (> 0); None weighs every row 1.

    Example::

        >>> rows = torch.tensor([[1.0, 1.0], [3.0, 0.0], [1.0, 1.0]])
        >>> mini_batch_aware_l2(rows, torch.tensor([7, 2, 7]))
        tensor(11.)
        >>> mini_batch_aware_l2(rows, torch.tensor([7, 2, 7]), frequency=torch.tensor([2.0, 9.0, 2.0]))
        tensor(2.)
    """
    if embeddings.dim() != 2 or ids.dim() != 1 or ids.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"expected embeddings [N, D] and ids [N], got {tuple(embeddings.shape)} and {tuple(ids.shape)}"
        )
    if frequency is not None and frequency.shape != ids.shape:
        raise ValueError(f"frequency must be [N] like ids, got {tuple(frequency.shape)} for ids {tuple(ids.shape)}")
    if ids.numel() == 0:
        return embeddings.new_zeros(())
    unique, inverse = torch.unique(ids, return_inverse=True)
    positions = torch.arange(ids.numel(), device=ids.device)
    first = torch.full((unique.numel(),), ids.numel(), device=ids.device).scatter_reduce(0, inverse, positions, "amin")
    squares = embeddings[first].pow(2).sum(dim=1)
    if frequency is None:
        return squares.sum()
    counts = frequency[first].to(squares.dtype)
    if bool((counts <= 0).any()):
        raise ValueError("frequency must be > 0 for every id in the batch (an id seen in the batch occurs in the data)")
    return (squares / counts).sum()
