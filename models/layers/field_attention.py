"""Field attention, ``softmax(Q K^T) V`` per sample and head, the core of AutoInt's interacting
layer: a fused CPU kernel where it applies, the eager ops elsewhere (same result to float rounding).

The kernel (``field_attention.cpp``, built at install on x86-64) runs when the input is a float32
CPU tensor, the head dim is 8 or 16, there are at most 64 fields and the CPU has AVX2; it keeps
each sample's heads in cache and reads q, k, v in place from the one projection, where the eager ops copy the heads out
to ``[B, H, F, d]`` and run batched matmuls over tiny matrices (``benchmarks/training.py``).

Shape notation: B batch, F fields, H heads, d head dim.
"""

from __future__ import annotations

import importlib.util

import torch

MAX_FIELDS = 64
HEAD_DIMS = (8, 16)


def _load_kernel() -> bool:
    """Import the compiled ops (registering ``torch.ops.recsys_embed.field_attention_*``)."""
    if importlib.util.find_spec("recsys_embed.models.layers._field_attention") is None:
        return False
    importlib.import_module("recsys_embed.models.layers._field_attention")
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


KERNEL_AVAILABLE = _load_kernel()


def fused_applies(qkv: torch.Tensor, num_heads: int) -> bool:
    """Whether :func:`field_attention` runs the fused kernel for ``qkv [B, F, 3*H*d]``."""
    return (
        KERNEL_AVAILABLE
        and qkv.device.type == "cpu"
        and qkv.dtype == torch.float32
        and qkv.shape[1] <= MAX_FIELDS
        and qkv.shape[2] // (3 * num_heads) in HEAD_DIMS
    )


class _FusedFieldAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: torch.Tensor, num_heads: int) -> torch.Tensor:  # type: ignore[override]
        out, probs = torch.ops.recsys_embed.field_attention_forward(qkv, num_heads)
        ctx.save_for_backward(qkv, probs)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return torch.ops.recsys_embed.field_attention_backward(grad, *ctx.saved_tensors), None


def eager_field_attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The reference: heads to ``[B, H, F, d]``, batched matmuls, softmax over the attended fields."""
    batch, num_fields, width = qkv.shape

    def heads(x: torch.Tensor) -> torch.Tensor:  # [B, F, H*d] -> [B, H, F, d]
        return x.reshape(batch, num_fields, num_heads, width // (3 * num_heads)).transpose(1, 2)

    q, k, v = (heads(x) for x in qkv.chunk(3, dim=2))
    attention = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # [B, H, F, F]
    return (attention @ v).transpose(1, 2).reshape(batch, num_fields, width // 3)


def field_attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, F, 3*H*d]`` (queries, keys, values side by side) -> ``[B, F, H*d]``: for each head h
    (columns ``h*d:(h+1)*d`` of each third), field m gets ``sum_k softmax_k(<q_m, k_k>) v_k``
    (no scaling, as in AutoInt).

    Example::

        >>> qkv = torch.randn(4, 5, 3 * 16)
        >>> torch.allclose(field_attention(qkv, 2), eager_field_attention(qkv, 2), atol=1e-6)
        True
    """
    if qkv.dim() != 3 or qkv.shape[2] % (3 * num_heads):
        raise ValueError(
            f"qkv must be [B, F, 3 * H * d] with H = {num_heads} heads, got {tuple(qkv.shape)}"
        )
    if fused_applies(qkv, num_heads):
        return _FusedFieldAttention.apply(qkv, num_heads)
    return eager_field_attention(qkv, num_heads)
