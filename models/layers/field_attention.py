"""AutoInt's interacting layer after its projections, ``relu(softmax(Q K^T) V + residual)`` per
sample and head: a fused CPU kernel where it applies, the eager ops elsewhere (same result to
float rounding).

The kernel (``field_attention.cpp``, built at install on x86-64) runs when the inputs are float32
CPU tensors, the head dim is 8 or 16, there are at most 64 fields and the CPU has AVX2; it keeps
each sample's heads in cache and reads q, k, v in place from the one projection, where the
eager ops copy the heads out to ``[B, H, F, d]`` and run batched matmuls over tiny matrices
(``benchmarks/training.py``).

Shape notation: B batch, F fields, H heads, d head dim.
"""

from __future__ import annotations

import torch

from recsys_embed.kernels import load_kernel

MAX_FIELDS = 64
HEAD_DIMS = (8, 16)
KERNEL_AVAILABLE = load_kernel("recsys_embed.models.layers._field_attention")


def fused_applies(qkv: torch.Tensor, num_heads: int) -> bool:
    """Whether :func:`interacting_attention` runs the fused kernel for ``qkv [B, F, 3*H*d]``."""
    return (
        KERNEL_AVAILABLE
        and qkv.device.type == "cpu"
        and qkv.dtype == torch.float32
        and qkv.shape[1] <= MAX_FIELDS
        and qkv.shape[2] // (3 * num_heads) in HEAD_DIMS
    )


class _FusedInteractingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: torch.Tensor, residual: torch.Tensor, num_heads: int) -> torch.Tensor:  # type: ignore[override]
        out, probs = torch.ops.recsys_embed.field_attention_forward(qkv, residual, num_heads)
        ctx.save_for_backward(qkv, probs, out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:  # type: ignore[override]
        qkv, probs, out = ctx.saved_tensors
        grad_qkv, grad_residual = torch.ops.recsys_embed.field_attention_backward(grad, qkv, probs, out)
        return grad_qkv, grad_residual, None


def eager_interacting_attention(qkv: torch.Tensor, residual: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The reference: heads to ``[B, H, F, d]``, batched matmuls, softmax over the attended fields."""
    batch, num_fields, width = qkv.shape

    def heads(x: torch.Tensor) -> torch.Tensor:  # [B, F, H*d] -> [B, H, F, d]
        return x.reshape(batch, num_fields, num_heads, width // (3 * num_heads)).transpose(1, 2)

    q, k, v = (heads(x) for x in qkv.chunk(3, dim=2))
    attention = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # [B, H, F, F]
    return torch.relu((attention @ v).transpose(1, 2).reshape(batch, num_fields, width // 3) + residual)


def interacting_attention(qkv: torch.Tensor, residual: torch.Tensor, num_heads: int) -> torch.Tensor:
    """AutoInt's interacting layer after its projections: ``qkv [B, F, 3*H*d]`` (queries, keys,
    values side by side) and ``residual [B, F, H*d]`` -> ``relu(attention + residual)``
    ``[B, F, H*d]``, where for each head h (columns ``h*d:(h+1)*d`` of each third) field m's
    attention is ``sum_k softmax_k(<q_m, k_k>) v_k`` (no scaling, as in AutoInt).

    Example::

        >>> qkv, residual = torch.randn(4, 5, 3 * 16), torch.randn(4, 5, 16)
        >>> torch.allclose(interacting_attention(qkv, residual, 2), eager_interacting_attention(qkv, residual, 2), atol=1e-6)
        True
    """
    if qkv.dim() != 3 or qkv.shape[2] % (3 * num_heads):
        raise ValueError(f"qkv must be [B, F, 3 * H * d] with H = {num_heads} heads, got {tuple(qkv.shape)}")
    if residual.shape != (*qkv.shape[:2], qkv.shape[2] // 3):
        raise ValueError(
            f"residual must be [B, F, H * d] = {[*qkv.shape[:2], qkv.shape[2] // 3]} for qkv {tuple(qkv.shape)}, "
            f"got {tuple(residual.shape)}"
        )
    if fused_applies(qkv, num_heads) and residual.dtype == torch.float32:
        return _FusedInteractingAttention.apply(qkv, residual, num_heads)
    return eager_interacting_attention(qkv, residual, num_heads)
