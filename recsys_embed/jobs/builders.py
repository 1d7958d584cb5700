"""Run-config names to fresh modules: the table layouts a run trains and the models on top.

Layout classes are found by name in the layout registry (``recsys_embed.tables.registry``:
``layout_class``, where artifacts find them too, and where compression plugins register);
this module reads a run config's layout options into them (``build_tables``; the layouts a
run can train are ``TRAINABLE_LAYOUTS``) and builds models from the ``MODELS`` table (CTR)
and the ``SEQUENTIAL_MODELS`` table (next-item ranking).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from recsys_embed import models
from recsys_embed.compression import CompressedTables
from recsys_embed.compression.checks import check_compression
from recsys_embed.jobs.config import from_mapping
from recsys_embed.features import Schema
from recsys_embed.tables import (
    MatryoshkaTables,
    MultiplexedConfig,
    MultiplexedTables,
    OptEmbedConfig,
    PerFeatureTables,
    PrunedTables,
    TableLayout,
    TableOptimizer,
)
from recsys_embed.tables.base import EmbeddingShapes

MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "mlp": (models.MLP, models.MLPConfig),
    "din": (models.DIN, models.DINConfig),
    "autoint": (models.AutoInt, models.AutoIntConfig),
    "fm": (models.FM, models.FMConfig),
    "deepfm": (models.DeepFM, models.DeepFMConfig),
    "dcn_v2": (models.DCNv2, models.DCNv2Config),
}
SEQUENTIAL_MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "bert4rec": (models.BERT4Rec, models.BERT4RecConfig),
    "sasrec": (models.SASRec, models.SASRecConfig),
}
TRAINABLE_LAYOUTS = ("per_feature", "multiplexed", "pruned", "matryoshka")
# models that read only the mean of each sequence: per_feature pools their sequences in the kernel
SEQUENCE_MEAN_MODELS = ("mlp", "autoint", "fm", "deepfm", "dcn_v2")


def _split_name(spec: Mapping[str, Any], where: str, allowed: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(f"{where}: expected a mapping with 'name', one of {sorted(allowed)}")
    if spec["name"] not in allowed:
        raise ValueError(f"{where}.name={spec['name']!r} is not one of {sorted(allowed)}")
    return spec["name"], {k: v for k, v in spec.items() if k != "name"}


def build_tables(
    spec: Mapping[str, Any], schema: Schema, num_embeddings: Mapping[str, int], optimizer: TableOptimizer, where: str = "layout"
) -> TableLayout:
    """A fresh table layout from ``{"name": ..., **options}``.

    ``per_feature`` (``pool_sequences``: see :func:`layout_for_model`; ``compression``: table group -> method
    config, a :class:`~recsys_embed.compression.CompressedTables`), ``multiplexed`` (MultiplexedConfig keys), ``pruned``
    (OptEmbedConfig keys, plus ``search`` for the dim search), ``matryoshka`` (``prefixes`` and a nested ``base`` layout spec).
    """
    name, rest = _split_name(spec, where, TRAINABLE_LAYOUTS)
    if name == "per_feature" and "compression" in rest:
        _per_feature_pooling(rest, where)
        return CompressedTables.from_options(schema, num_embeddings, rest["compression"], optimizer, f"{where}.compression")
    if name == "per_feature":
        return PerFeatureTables(schema, num_embeddings, optimizer, pool_sequences=_per_feature_pooling(rest, where))
    if name == "multiplexed":
        return MultiplexedTables(schema, from_mapping(MultiplexedConfig, rest, where), optimizer, vocab_sizes=dict(num_embeddings))
    if name == "pruned":  # 'search' (EvolutionConfig keys) is read by the training job
        rest.pop("search", None)
        return PrunedTables(schema, num_embeddings, from_mapping(OptEmbedConfig, rest, where), optimizer)
    unknown = sorted(set(rest) - {"prefixes", "base"})
    if unknown or "prefixes" not in rest:
        raise ValueError(f"{where}: matryoshka takes 'prefixes' (a list of dims) and 'base' (a layout), got {sorted(rest)}")
    base = build_tables(rest.get("base", {"name": "per_feature"}), schema, num_embeddings, optimizer, f"{where}.base")
    return MatryoshkaTables(base, prefixes=list(rest["prefixes"]))


def validate_specs(layout: Mapping[str, Any], model: Mapping[str, Any]) -> None:
    """Check layout and model names and option keys before any data is read."""
    name, rest = _split_name(layout, "layout", TRAINABLE_LAYOUTS)
    if name == "per_feature":
        _per_feature_pooling(rest, "layout")
        check_compression(rest.get("compression", {}), "layout.compression")
    if name == "multiplexed":
        from_mapping(MultiplexedConfig, rest, "layout")
    if name == "pruned":
        from_mapping(OptEmbedConfig, {k: v for k, v in rest.items() if k != "search"}, "layout")
    model_name, model_rest = _split_name(model, "model", MODELS)
    from_mapping(MODELS[model_name][1], model_rest, "model")


def _per_feature_pooling(options: Mapping[str, Any], where: str) -> bool:
    """per_feature's options: ``pool_sequences`` (a bool, default False) or ``compression`` (which
    keeps every position: the compressed layout does not pool in the kernel)."""
    if set(options) - {"pool_sequences", "compression"}:
        raise ValueError(f"{where}: per_feature takes only 'pool_sequences' and 'compression', got {sorted(options)}")
    pool = options.get("pool_sequences", False)
    if not isinstance(pool, bool):
        raise ValueError(f"{where}.pool_sequences: expected true or false, got {pool!r}")
    if pool and "compression" in options:
        raise ValueError(f"{where}: pool_sequences: true and compression cannot be combined (compressed tables keep every position)")
    return pool


def layout_for_model(layout: Mapping[str, Any], model: Mapping[str, Any], mba_l2: float = 0.0) -> dict[str, Any]:
    """``layout`` with ``pool_sequences: true`` added when it is ``per_feature`` without that key
    and the model reads only sequence means (``SEQUENCE_MEAN_MODELS``): the same model inputs,
    computed by the kernel's pooling instead of per-position embeddings and a masked mean. Not
    with mini-batch aware L2 (``mba_l2 > 0``), which needs the row each position read: then the
    sequences stay per position, and an explicit ``pool_sequences: true`` raises ``ValueError``.

    Example::

        >>> layout_for_model({"name": "per_feature"}, {"name": "autoint"})
        {'name': 'per_feature', 'pool_sequences': True}
        >>> layout_for_model({"name": "per_feature"}, {"name": "autoint"}, mba_l2=0.01)
        {'name': 'per_feature'}
        >>> layout_for_model({"name": "per_feature"}, {"name": "din"})
        {'name': 'per_feature'}
    """
    if layout.get("name") != "per_feature" or "compression" in layout:
        return dict(layout)
    if mba_l2 and layout.get("pool_sequences"):
        raise ValueError(
            "layout.pool_sequences: true pools each sequence in the kernel, but trainer.mba_l2 > 0 needs the table row "
            "every sequence position read; set layout.pool_sequences: false (same model inputs) or trainer.mba_l2: 0"
        )
    if "pool_sequences" not in layout and model.get("name") in SEQUENCE_MEAN_MODELS and not mba_l2:
        return {**layout, "pool_sequences": True}
    return dict(layout)


def default_history(schema: Schema) -> dict[str, str]:
    """Each sequence feature mapped to the categorical feature whose table it shares."""
    owners = {f.table: f.name for f in schema.sparse_features if not f.is_sequence}
    return {f.name: owners[f.table] for f in schema.sparse_features if f.is_sequence and f.table in owners}  # type: ignore[index]


def build_model(spec: Mapping[str, Any], shapes: EmbeddingShapes, schema: Schema | None = None, where: str = "model") -> nn.Module:
    """A fresh model from ``{"name": ..., **config}`` on top of a layout's output shapes.

    DIN's ``history`` defaults to the schema's table groups (``hist_item_id`` -> ``item_id``).
    """
    name, rest = _split_name(spec, where, MODELS)
    model_cls, config_cls = MODELS[name]
    if name == "din" and "history" not in rest and schema is not None:
        rest["history"] = default_history(schema)
    return model_cls(shapes, from_mapping(config_cls, rest, where))


def sequential_config(spec: Any, where: str = "model") -> Any:
    """A sequential model's config from ``{"name": "sasrec" | "bert4rec", **fields}``, or a
    config object as it is."""
    if isinstance(spec, tuple(config for _, config in SEQUENTIAL_MODELS.values())):
        return spec
    if isinstance(spec, Mapping) and "name" not in spec:
        raise ValueError(
            f"{where}.name: required, one of {sorted(SEQUENTIAL_MODELS)} (sequential runs of versions "
            "before SASRec trained BERT4Rec: add 'name: bert4rec' to keep that)"
        )
    name, rest = _split_name(spec, where, SEQUENTIAL_MODELS)
    return from_mapping(SEQUENTIAL_MODELS[name][1], rest, where)


def sequential_name(config: Any) -> str:
    """The ``SEQUENTIAL_MODELS`` name of a sequential model config."""
    return next(name for name, (_, kind) in SEQUENTIAL_MODELS.items() if isinstance(config, kind))


def build_sequential_model(config: Any, rows: int) -> nn.Module:
    """A fresh sequential model (:class:`~recsys_embed.models.SequentialModel`) over ``rows`` item-table rows."""
    return SEQUENTIAL_MODELS[sequential_name(config)][0](config, rows)
