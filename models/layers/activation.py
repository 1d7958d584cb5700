"""Hidden-unit activations: Dice (DIN's data-adaptive activation), PReLU, ReLU, GELU.

Shape notation: ``[..., H]`` any leading dims, H hidden units.
"""

from __future__ import annotations

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
        p = torch.sigmoid(normed).reshape(x.shape)
        return p * x + (1.0 - p) * self.alpha * x


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
