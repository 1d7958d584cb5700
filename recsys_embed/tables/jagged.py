"""Ids in a ``KeyedJaggedTensor``, before a kernel reads them: a sequence feature as a grid of
positions, its most recent ``max_len`` ids, bounds checks, bag offsets, and a KJT from dense ids.

Shape notation: B batch size, L a sequence feature's ``max_len``, F features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


def sequence_grid(values: torch.Tensor, lengths: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A jagged sequence feature as a ``[L, B]`` grid of ids and a ``[L, B]`` presence mask.

    Keeps the most recent ``max_len`` ids of each row (the last ones), left-aligned: position
    p holds the p-th kept id. Empty positions hold 0 and are False in the mask.
    """
    batch = lengths.numel()
    lengths = lengths.to(torch.int64)
    starts = torch.cumsum(lengths, 0) - lengths
    kept = torch.clamp(lengths, max=max_len)
    row = torch.repeat_interleave(torch.arange(batch, device=values.device), lengths)
    pos = torch.arange(values.numel(), device=values.device) - torch.repeat_interleave(starts, lengths)
    pos = pos - (lengths - kept)[row]  # drop the oldest ids beyond max_len
    keep = pos >= 0
    grid = torch.zeros((max_len, batch), dtype=torch.int64, device=values.device)
    present = torch.zeros((max_len, batch), dtype=torch.bool, device=values.device)
    grid[pos[keep], row[keep]] = values[keep].to(torch.int64)
    present[pos[keep], row[keep]] = True
    return grid, present


def most_recent(values: torch.Tensor, lengths: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, lengths)`` of a jagged feature keeping the most recent ``max_len`` ids of each
    row (the last ones, in order); returned as they are when no row is longer."""
    lengths = lengths.to(torch.int64)
    if lengths.numel() == 0 or int(lengths.max()) <= max_len:
        return values.to(torch.int64), lengths
    grid, present = sequence_grid(values, lengths, max_len)  # [L, B]
    return grid.T[present.T], present.sum(0)


def check_ids(name: str, values: torch.Tensor, rows: int | None) -> None:
    """Raise a clear error for ids outside ``[0, rows)`` (``None``: negative ids only; the kernel
    must never read out of bounds)."""
    if values.numel() == 0:
        return
    lo, hi = (int(v) for v in values.aminmax())
    if lo < 0 or (rows is not None and hi >= rows):
        raise IndexError(
            f"feature {name!r}: ids must lie in [0, {rows if rows is not None else '2**63'}) for its table, got min {lo} max {hi}; "
            "ids come from the fitted pipeline (0 missing, 1 out-of-vocabulary)"
        )


def single_ids(kjt: KeyedJaggedTensor, names: Sequence[str]) -> torch.Tensor | None:
    """The ids as ``[F, B]`` when ``kjt`` holds exactly the features ``names``, in this order,
    with one id in every bag (the usual CTR batch); ``None`` otherwise."""
    if kjt.keys() != list(names):
        return None
    values, lengths = kjt.values(), kjt.lengths()
    if values.numel() != lengths.numel() or values.numel() == 0:
        return None
    shortest, longest = lengths.aminmax()
    if int(shortest) != 1 or int(longest) != 1:
        return None
    return values.to(torch.int64).view(len(names), -1)


def offsets_of(lengths: torch.Tensor) -> torch.Tensor:
    """Bag offsets ``[N + 1]`` (int64) from bag lengths ``[N]``."""
    offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths.to(torch.int64), 0, out=offsets[1:])
    return offsets


def kjt_from_ids(ids: Mapping[str, torch.Tensor], padding_id: int | None = None) -> KeyedJaggedTensor:
    """A ``KeyedJaggedTensor`` from dense id tensors, for models that hold ids as tensors.

    ``ids``: feature -> ``[B]`` (one id per row) or ``[B, L]`` (a sequence per row, oldest
    first); in ``[B, L]`` tensors, entries equal to ``padding_id`` are dropped.

    Example::

        >>> kjt = kjt_from_ids({"user": torch.tensor([3, 4]), "hist": torch.tensor([[5, 0], [6, 7]])}, padding_id=0)
        >>> kjt.keys(), kjt.lengths().tolist(), kjt.values().tolist()
        (['user', 'hist'], [1, 1, 1, 2], [3, 4, 5, 6, 7])
    """
    if not ids:
        raise ValueError("kjt_from_ids: no features given")
    batch = {name: int(t.shape[0]) for name, t in ids.items()}
    if len(set(batch.values())) != 1:
        raise ValueError(f"kjt_from_ids: every feature needs the same batch size, got {batch}")
    values, lengths = [], []
    for name, tensor in ids.items():
        if tensor.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
            raise TypeError(f"kjt_from_ids: feature {name!r} holds {tensor.dtype}; ids must be an integer tensor")
        if tensor.dim() == 1:
            values.append(tensor.to(torch.int64))
            lengths.append(torch.ones_like(values[-1]))
        elif tensor.dim() == 2:
            keep = torch.ones_like(tensor, dtype=torch.bool) if padding_id is None else tensor != padding_id
            values.append(tensor[keep].to(torch.int64))
            lengths.append(keep.sum(dim=1).to(torch.int64))
        else:
            raise ValueError(f"kjt_from_ids: feature {name!r} has shape {tuple(tensor.shape)}; expected [B] or [B, L]")
    return KeyedJaggedTensor(keys=list(ids), values=torch.cat(values), lengths=torch.cat(lengths))
