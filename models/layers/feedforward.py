"""The fully connected stack every model ends in: Linear -> activation -> dropout, repeated."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recsys_embed.models.layers.activation import make_activation


class MLPBlock(nn.Module):
    """``len(hidden)`` layers of Linear -> activation -> dropout.

    Input ``[..., in_dim]``, output ``[..., out_dim]`` with ``out_dim = hidden[-1]``
    (``in_dim`` when ``hidden`` is empty: the block is then the identity).

    Example::

        >>> block = MLPBlock(8, (16, 4), activation="prelu")
        >>> block(torch.randn(2, 5, 8)).shape, block.out_dim
        (torch.Size([2, 5, 4]), 4)
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], activation: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        if in_dim <= 0 or any(h <= 0 for h in hidden):
            raise ValueError(f"MLP sizes must be > 0, got in_dim={in_dim} hidden={tuple(hidden)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = in_dim
        for units in hidden:
            layers += [nn.Linear(width, units), make_activation(activation, units)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = units
        self.layers = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
