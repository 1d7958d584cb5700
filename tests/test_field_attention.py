"""The fused interacting-attention kernel against the eager ops: outputs and gradients, every field
count it serves, the fall-backs, and that it really runs here."""

from __future__ import annotations

import platform

import pytest
import torch

from recsys_embed.models.layers.field_attention import (
    KERNEL_AVAILABLE,
    MAX_FIELDS,
    eager_interacting_attention,
    fused_applies,
    interacting_attention,
)


def _residual(qkv: torch.Tensor) -> torch.Tensor:
    """A residual with about half of the outputs below zero after the ReLU."""
    return torch.linspace(-1.5, 1.5, qkv.numel() // 3, dtype=qkv.dtype).reshape(*qkv.shape[:2], -1)


def _outputs_and_grads(qkv: torch.Tensor, heads: int, attend) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = qkv.detach().clone().requires_grad_(True)
    residual = _residual(qkv).requires_grad_(True)
    out = attend(x, residual, heads)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape))
    return out.detach(), x.grad, residual.grad


def test_the_kernel_is_built_and_used_on_this_machine() -> None:
    if platform.machine() != "x86_64" or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("the kernel is built for x86-64 with AVX2 only")
    assert KERNEL_AVAILABLE
    assert fused_applies(torch.zeros(2, 14, 48), num_heads=2)


@pytest.mark.parametrize("head_dim", [8, 16])
@pytest.mark.parametrize("num_fields", [1, 7, 8, 9, 14, 39, MAX_FIELDS])
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_fused_matches_eager_in_float64(num_fields: int, head_dim: int, heads: int) -> None:
    torch.manual_seed(num_fields * 100 + head_dim + heads)
    qkv = torch.randn(5, num_fields, 3 * heads * head_dim) * 2.0  # scores up to ~±100: exercises the max shift
    assert fused_applies(qkv, heads) == KERNEL_AVAILABLE
    out, grad, grad_residual = _outputs_and_grads(qkv, heads, interacting_attention)
    ref_out, ref_grad, ref_grad_residual = _outputs_and_grads(qkv.double(), heads, eager_interacting_attention)
    assert 0.2 < float((out == 0).float().mean()) < 0.8  # the ReLU cuts a good share
    torch.testing.assert_close(out, ref_out.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_residual, ref_grad_residual.float(), rtol=1e-6, atol=1e-6)


def test_fused_reads_a_non_contiguous_input_and_is_thread_count_independent() -> None:
    torch.manual_seed(0)
    wide = torch.randn(64, 14, 60)
    qkv = wide[:, :, :48]  # a view with row stride 60
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _outputs_and_grads(qkv, 2, interacting_attention)
        torch.set_num_threads(2)
        two = _outputs_and_grads(qkv, 2, interacting_attention)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    torch.testing.assert_close(one[0], eager_interacting_attention(qkv, _residual(qkv), 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "qkv, heads",
    [
        (torch.randn(3, MAX_FIELDS + 1, 48), 2),  # too many fields
        (torch.randn(3, 5, 24), 2),  # head dim 4
        (torch.randn(3, 5, 48, dtype=torch.float64), 2),  # float64
    ],
)
def test_the_eager_ops_serve_what_the_kernel_does_not(qkv: torch.Tensor, heads: int) -> None:
    assert not fused_applies(qkv, heads)
    residual = _residual(qkv)
    torch.testing.assert_close(interacting_attention(qkv, residual, heads), eager_interacting_attention(qkv, residual, heads))


def test_bad_shapes_get_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"qkv must be \[B, F, 3 \* H \* d\] with H = 2 heads, got \(3, 5, 50\)"):
        interacting_attention(torch.randn(3, 5, 50), torch.randn(3, 5, 16), 2)
    with pytest.raises(ValueError, match=r"got \(5, 48\)"):
        interacting_attention(torch.randn(5, 48), torch.randn(5, 16), 2)
    with pytest.raises(ValueError, match=r"residual must be \[B, F, H \* d\] = \[3, 5, 16\] for qkv \(3, 5, 48\), got \(3, 5, 8\)"):
        interacting_attention(torch.randn(3, 5, 48), torch.randn(3, 5, 8), 2)
