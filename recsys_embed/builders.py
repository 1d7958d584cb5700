"""Names to modules: the table layouts and models a run config or an artifact can name.

Plain dictionaries, not a plugin registry: third parties plug in compression plugins
(``recsys_embed.compression``), while layouts and models are built by name only here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from recsys_embed import models
from recsys_embed.config import from_mapping
from recsys_embed.features import Schema
from recsys_embed.tables import MultiplexedConfig, MultiplexedTables, PerFeatureTables, TableOptimizer
from recsys_embed.tables.base import EmbeddingShapes

MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "mlp": (models.MLP, models.MLPConfig),
    "din": (models.DIN, models.DINConfig),
    "autoint": (models.AutoInt, models.AutoIntConfig),
}
LAYOUTS = ("per_feature", "multiplexed")


def _split_name(spec: Mapping[str, Any], where: str, allowed: Any) -> tuple[str, dict[str, Any]]:
    if "name" not in spec:
        raise ValueError(f"{where}: missing 'name'; expected one of {sorted(allowed)}")
    rest = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] not in allowed:
        raise ValueError(f"{where}.name={spec['name']!r} is not one of {sorted(allowed)}")
    return spec["name"], rest


def build_tables(
    spec: Mapping[str, Any], schema: Schema, num_embeddings: Mapping[str, int], optimizer: TableOptimizer, where: str = "layout"
) -> nn.Module:
    """A fresh table layout from ``{"name": ..., **options}``."""
    name, rest = _split_name(spec, where, LAYOUTS)
    if name == "per_feature":
        if rest:
            raise ValueError(f"{where}: per_feature takes no options, got {sorted(rest)}")
        return PerFeatureTables(schema, num_embeddings, optimizer)
    config = from_mapping(MultiplexedConfig, rest, where)
    return MultiplexedTables(schema, config, optimizer)


def build_model(spec: Mapping[str, Any], shapes: EmbeddingShapes, where: str = "model") -> nn.Module:
    """A fresh model from ``{"name": ..., **config}`` on top of a layout's output shapes."""
    name, rest = _split_name(spec, where, MODELS)
    model_cls, config_cls = MODELS[name]
    return model_cls(shapes, from_mapping(config_cls, rest, where))
