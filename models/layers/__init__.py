"""Layers grouped by role: activation, feedforward, attention (DIN), interaction (AutoInt), pooling."""

from recsys_embed.models.layers.activation import ACTIVATIONS, Dice, PReLU, make_activation
from recsys_embed.models.layers.attention import LocalActivationUnit
from recsys_embed.models.layers.interaction import InteractingLayer
from recsys_embed.models.layers.feedforward import MLPBlock
from recsys_embed.models.layers.pooling import FlatInputs, masked_mean, masked_sum, require_features

__all__ = [
    "ACTIVATIONS",
    "Dice",
    "FlatInputs",
    "InteractingLayer",
    "LocalActivationUnit",
    "MLPBlock",
    "PReLU",
    "make_activation",
    "masked_mean",
    "masked_sum",
    "require_features",
]
