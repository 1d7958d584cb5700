"""Hidden-unit activations: Dice (DIN's data-adaptive activation), PReLU, ReLU, GELU.

Shape notation: ``[..., H]`` any leading dims, H hidden units.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = ("dice", "prelu", "relu", "gelu")


class Dice(nn.Module):
    """Dice (Zhou et al. 2018, eq. 7): ``f(s) = p(s) * s + (1 - p(s)) * alpha * s`` with
    ``p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps))``.

    ``E[s]`` and ``Var[s]`` are the mini-batch statistics while training (a batch of one row
    uses the running ones) and running averages in eval mode: batch normalisation without
    affine parameters. ``alpha`` is learned per unit and starts at 0, so Dice starts as a
    smoothed ReLU. Input and output ``[..., H]``.

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
        normed = F.batch_norm(
            flat, self.running_mean, self.running_var, training=batch_stats, momentum=self.momentum, eps=self.eps
        )
        return _DiceGate.apply(x, normed.reshape(x.shape), self.alpha)


class _DiceGate(torch.autograd.Function):
    """``x * (alpha + (1 - alpha) * sigmoid(z))`` (Dice's ``p x + (1 - p) alpha x``) in one node:
    backward saves ``x`` and ``p`` and makes a few passes over them, where autograd's graph of the
    same expression makes about twice as many (Dice on DIN's ``[B * L, H]`` attention hidden
    units is the largest elementwise cost of a training step)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(z)
        ctx.save_for_backward(x, p, alpha)
        return x * torch.addcmul(alpha, p, 1.0 - alpha)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, p, alpha = ctx.saved_tensors
        gate = torch.addcmul(alpha, p, 1.0 - alpha)  # alpha + (1 - alpha) p
        grad_x = grad * gate
        grad_gate = grad * x  # d out / d gate
        one_minus_p = 1.0 - p
        grad_alpha = (grad_gate * one_minus_p).reshape(-1, x.shape[-1]).sum(0)
        grad_z = grad_gate.mul_(p).mul_(one_minus_p).mul_(1.0 - alpha)  # d gate / d z = (1 - alpha) p (1 - p)
        return grad_x, grad_z, grad_alpha


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
