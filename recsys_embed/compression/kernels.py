"""The compression methods' compiled CPU ops (``kernels.cpp``, float32 / int64 on x86-64 with
AVX2) and the eager paths that define them (other devices and dtypes, or no compiled module):

* :func:`row_product` (QR ``mult``'s quotient factor), per slot

      out[b, p] = rows[b, p] * table[index[b, p]],      rows [B, P, D], index [B, P], table [T, D]

      d rows[b, p] = grad[b, p] * table[index[b, p]]
      d table[t]   = sum over (b, p) with index[b, p] = t of grad[b, p] * rows[b, p]

  one pass each way (the eager ops stream several ``[B, P, D]`` tensors);
* :func:`hash_buckets` (the hashes of every method but double hashing's pair): the
  64-bit SplitMix64 hash ``h`` of ``value ^ seed`` modulo ``buckets``, unsigned
  (:func:`recsys_embed.hashing.bucket_torch`, bit for bit), one pass over the values;
* :func:`double_hash_rows` (double hashing's two rows of each id): the same ``h`` of
  ``id ^ seed`` (:func:`recsys_embed.hashing.hash_int_torch`), then ``(h >> 32) mod M1`` and
  ``(h & (2^32 - 1)) mod M2``, one pass over the ids.
"""

from __future__ import annotations

from typing import Any

import torch

from recsys_embed.hashing import bucket_torch, hash_int_torch
from recsys_embed.kernels import load_kernel

KERNEL = load_kernel("recsys_embed.compression._kernels")


class _RowProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows, table, index)
        return torch.ops.recsys_embed.row_product_forward(rows, index, table)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        rows, table, index = ctx.saved_tensors
        if grad.stride(-1) != 1:
            grad = grad.contiguous()
        grad_rows, grad_table = torch.ops.recsys_embed.row_product_backward(grad, rows, index, table)
        return grad_rows, grad_table, None


def row_product(rows: torch.Tensor, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``rows * table[index]`` for ``rows`` ``[B, P, D]``, ``table`` ``[T, D]``, ``index`` ``[B, P]`` int64.

    >>> rows, table = torch.ones(2, 1, 4), torch.tensor([[1.0, 2, 3, 4], [0.5, 0.5, 0.5, 0.5]])
    >>> row_product(rows, table, torch.tensor([[1], [0]]))[:, 0].tolist()
    [[0.5, 0.5, 0.5, 0.5], [1.0, 2.0, 3.0, 4.0]]
    """
    fast = (
        KERNEL
        and rows.device.type == "cpu"
        and rows.dtype == table.dtype == torch.float32
        and rows.stride(-1) == 1
    )
    if not fast:
        return rows * table[index]
    return _RowProduct.apply(rows, table.contiguous(), index)


def _signed(seed: int) -> int:
    """A 64-bit seed as the int64 an op's ``int`` argument takes (the same bits)."""
    return seed - (1 << 64) if seed >= 1 << 63 else seed


def hash_buckets(values: torch.Tensor, seed: int, buckets: int) -> torch.Tensor:
    """``bucket_torch(values, seed, buckets)``: the bucket in ``[0, buckets)`` of every int64 value
    (compiled for ``buckets < 2^31``, every table's row count).

    >>> hash_buckets(torch.tensor([0, 1, 2]), seed=7, buckets=1000).tolist()
    [487, 592, 618]
    """
    if KERNEL and values.device.type == "cpu" and values.dtype == torch.int64 and buckets < 1 << 31:
        return torch.ops.recsys_embed.hash_buckets(values, _signed(seed), buckets)
    return bucket_torch(values, seed, buckets)


def double_hash_rows(ids: torch.Tensor, seed: int, first: int, second: int) -> torch.Tensor:
    """``[2, N]`` int64: the row of each id ``[N]`` in a table of ``first`` and one of ``second``
    rows (both below ``2^31``), from the high and the low 32 bits of one hash.

    >>> double_hash_rows(torch.tensor([0, 1, 2]), seed=7, first=10, second=1000).tolist()
    [[0, 1, 8], [567, 816, 650]]
    """
    if KERNEL and ids.device.type == "cpu" and ids.dtype == torch.int64 and ids.dim() == 1:
        return torch.ops.recsys_embed.double_hash_rows(ids, _signed(seed), first, second)
    h = hash_int_torch(ids, seed)
    rows = torch.empty((2, ids.numel()), dtype=torch.int64, device=ids.device)  # no stack: written in place
    torch.remainder((h >> 32) & 0xFFFFFFFF, first, out=rows[0])
    torch.remainder(h & 0xFFFFFFFF, second, out=rows[1])
    return rows
