"""Hidden-unit activations: Dice (DIN's data-adaptive activation), PReLU, ReLU, GELU.

Shape notation: ``[..., H]`` any leading dims, H hidden units.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_embed.models.layers.blocks import row_blocks
from recsys_embed.kernels import load_kernel

ACTIVATIONS = ("dice", "prelu", "relu", "gelu")
DICE_KERNEL = load_kernel("recsys_embed.models.layers._dice")


class Dice(nn.Module):
    """Dice (Zhou et al. 2018, eq. 7): ``f(s) = p(s) * s + (1 - p(s)) * alpha * s`` with
    ``p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps))``.

    ``E[s]`` and ``Var[s]`` are the mini-batch statistics while training (a batch of one row
    uses the running ones) and running averages in eval mode: batch normalisation without
    affine parameters. ``alpha`` is learned per unit and starts at 0, so Dice starts as a
    smoothed ReLU. Input and output ``[..., H]``.

    Statistics, forward and backward run fused (:func:`dice`), one output tensor each, where
    the eager ops make about ten tensors of the input's size: on float32 CPU tensors in the
    compiled kernel (``dice.cpp``, one pass over the input for each, with AVX2), elsewhere in
    torch ops over cache-sized row blocks.

    Example::

        >>> dice = Dice(3).eval()
        >>> dice(torch.tensor([[-2.0, 0.0, 2.0]])).shape
        torch.Size([1, 3])
    """

    def __init__(self, num_units: int, eps: float = 1e-8, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.alpha = nn.Parameter(torch.zeros(num_units))
        self.register_buffer("running_mean", torch.zeros(num_units))
        self.register_buffer("running_var", torch.ones(num_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        batch_stats = self.training and flat.shape[0] > 1  # one row has no variance: use the running stats
        if batch_stats:
            with torch.no_grad():
                mean, var = column_stats(flat)
                n, m = flat.shape[0], self.momentum
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                self.running_var.mul_(1 - m).add_(var, alpha=m * n / (n - 1))  # unbiased, as batch norm
        else:
            mean, var = self.running_mean, self.running_var
        invstd = torch.rsqrt(var.to(flat.dtype) + self.eps)
        return dice(flat, self.alpha, mean.to(flat.dtype), invstd, batch_stats).reshape(x.shape)


def dice(x: torch.Tensor, alpha: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, batch_stats: bool) -> torch.Tensor:
    """Dice of ``x [N, H]`` given its statistics ``mean``, ``invstd = 1 / sqrt(var + eps)`` ``[H]``.

    ``y = x * (alpha + (1 - alpha) * p)``, ``p = sigmoid(n)``, ``n = (x - mean) * invstd``.
    Backward, with ``g = dL/dy`` and ``g_n = g * x * (1 - alpha) * p * (1 - p)``:
    ``dL/dalpha = sum_rows g * x * (1 - p)`` and ``dL/dx = g * (alpha + (1 - alpha) * p) + invstd * g_n``,
    less ``invstd * (mean_rows(g_n) + n * mean_rows(g_n * n))`` when ``batch_stats`` (the
    statistics are ``x``'s own, the batch-norm backward). ``mean`` and ``invstd`` get no gradient.
    """
    return _Dice.apply(x, alpha, mean, invstd, batch_stats)


def kernel_applies(x: torch.Tensor) -> bool:
    """Whether :func:`dice` and :func:`column_stats` of ``x`` run the compiled kernel: float32 on
    a CPU with AVX2, the kernel built."""
    return DICE_KERNEL and x.device.type == "cpu" and x.dtype == torch.float32


def column_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of each column of ``x [N, H]`` -> two ``[H]``: in the kernel, one
    pass summing ``x - x[0]`` in double; otherwise two passes, the second over :func:`row_blocks`
    (several times faster on CPU than ``torch.var_mean(x, 0)``)."""
    if kernel_applies(x):
        return torch.ops.recsys_embed.dice_stats(x)
    mean = x.sum(0) / x.shape[0]
    sum_sq = torch.zeros_like(mean)
    for rows in row_blocks(*x.shape, x.device):
        centered = x[rows] - mean
        sum_sq += centered.mul_(centered).sum(0)
    return mean, sum_sq / x.shape[0]


class _Dice(torch.autograd.Function):
    """:func:`dice` in the kernel (:func:`kernel_applies`) or over :func:`row_blocks` of ``x``: one
    ``[N, H]`` output forward, one backward."""

    @staticmethod
    def forward(ctx, x, alpha, mean, invstd, batch_stats):  # type: ignore[no-untyped-def]
        x = x.contiguous()
        ctx.save_for_backward(x, alpha, mean, invstd)
        ctx.batch_stats = batch_stats
        if kernel_applies(x):
            return torch.ops.recsys_embed.dice_forward(x, alpha, mean, invstd)
        y = torch.empty_like(x)
        keep, shift = 1 - alpha, -mean * invstd  # n = x * invstd + shift
        for rows in row_blocks(*x.shape, x.device):
            p = torch.addcmul(shift, x[rows], invstd).sigmoid_()
            torch.mul(torch.addcmul(alpha, p, keep), x[rows], out=y[rows])
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        x, alpha, mean, invstd = ctx.saved_tensors
        if kernel_applies(x):
            grad_x, grad_alpha = torch.ops.recsys_embed.dice_backward(grad, x, alpha, mean, invstd, ctx.batch_stats)
            return grad_x, grad_alpha, None, None, None
        grad = grad.contiguous()
        grad_x, grad_alpha = torch.empty_like(x), torch.zeros_like(alpha)
        sum_gn, sum_gn_n = torch.zeros_like(alpha), torch.zeros_like(alpha)
        keep, shift, blocks = 1 - alpha, -mean * invstd, row_blocks(*x.shape, x.device)
        for rows in blocks:
            xs, gs = x[rows], grad[rows]
            n = torch.addcmul(shift, xs, invstd)
            p = torch.sigmoid(n)
            q = gs * xs
            q.addcmul_(q, p, value=-1)  # g * x * (1 - p)
            grad_alpha += q.sum(0)
            gn = q.mul_(p).mul_(keep)
            torch.addcmul(alpha, p, keep, out=grad_x[rows]).mul_(gs).addcmul_(gn, invstd)
            if ctx.batch_stats:
                sum_gn += gn.sum(0)
                sum_gn_n += (gn * n).sum(0)
        if ctx.batch_stats:
            # - invstd * (mean(g_n) + (x - mean) * invstd * mean(g_n n)) = - x * slope + offset
            slope = invstd * invstd * sum_gn_n / x.shape[0]
            offset = mean * slope - invstd * sum_gn / x.shape[0]
            for rows in blocks:
                grad_x[rows].addcmul_(x[rows], -slope).add_(offset)
        return grad_x, grad_alpha, None, None, None


class PReLU(nn.Module):
    """Parametric ReLU with one learned negative slope per unit of the last dim (``nn.PReLU``
    reads dim 1 as the channel, which is L for ``[B, L, H]`` inputs). Input and output ``[..., H]``."""

    def __init__(self, num_units: int, init: float = 0.25) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_units,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, self.weight * x)


def make_activation(name: str, num_units: int) -> nn.Module:
    """The activation ``name`` (one of :data:`ACTIVATIONS`) for a layer of ``num_units`` units."""
    if name == "dice":
        return Dice(num_units)
    if name == "prelu":
        return PReLU(num_units)
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation {name!r} is not one of {ACTIVATIONS}")
