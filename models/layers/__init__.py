"""Layers grouped by role: activation, feedforward, attention (DIN), interaction (AutoInt, FM),
cross (DCN-v2), pooling."""

from recsys_embed.models.layers.activation import ACTIVATIONS, Dice, PReLU, make_activation
from recsys_embed.models.layers.attention import LocalActivationUnit
from recsys_embed.models.layers.cross import CrossLayer, CrossNetwork, MixtureCrossLayer
from recsys_embed.models.layers.interaction import InteractingLayer, fm_pairwise
from recsys_embed.models.layers.feedforward import MLPBlock
from recsys_embed.models.layers.pooling import FlatInputs, masked_mean, masked_sum, require_features, stack_fields

__all__ = [
    "ACTIVATIONS",
    "CrossLayer",
    "CrossNetwork",
    "Dice",
    "FlatInputs",
    "InteractingLayer",
    "LocalActivationUnit",
    "MLPBlock",
    "MixtureCrossLayer",
    "PReLU",
    "fm_pairwise",
    "make_activation",
    "masked_mean",
    "masked_sum",
    "require_features",
    "stack_fields",
]
