"""The product of kernel rows with rows of a small dense table, per slot:

    out[b, p] = rows[b, p] * table[index[b, p]],      rows [B, P, D], index [B, P], table [T, D]

    d rows[b, p]   = grad[b, p] * table[index[b, p]]
    d table[t]     = sum over (b, p) with index[b, p] = t of grad[b, p] * rows[b, p]

On CPU (float32, AVX2) one pass of ``row_product.cpp`` each way; elsewhere the eager ops
(``rows * table[index]``). QR ``mult`` uses it for its quotient factor.
"""

from __future__ import annotations

from typing import Any

import torch

from recsys_embed.kernels import load_kernel

KERNEL = load_kernel("recsys_embed.compression._row_product")


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
