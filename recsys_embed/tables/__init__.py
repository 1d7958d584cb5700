"""Embedding table layouts: each maps a KeyedJaggedTensor to per-feature embeddings.

Every layout implements :class:`TableLayout` (``recsys_embed.tables.contract``) and is
registered by name (``recsys_embed.tables.registry``: :func:`layout_class`). Layouts:
:class:`PerFeatureTables` (one table per table group), :class:`MultiplexedTables` (one shared
table, hashed probes), :class:`PrunedTables` (OptEmbed) and :class:`MatryoshkaTables` (nested
prefix dims over any layout); :class:`CompactTables` is the compact inference export of the
last two.
"""

from recsys_embed.tables.accounting import expected_collision_rate
from recsys_embed.tables.base import Embeddings, EmbeddingShapes, FusedTables, TableOptimizer
from recsys_embed.tables.jagged import kjt_from_ids
from recsys_embed.tables.compact import CompactTables
from recsys_embed.tables.contract import TableLayout
from recsys_embed.tables.evolution import EvolutionConfig, SearchResult, evolutionary_search
from recsys_embed.tables.imports import from_ebc_state_dict, from_embeddings, to_embedding_bag_collection
from recsys_embed.tables.matryoshka import MatryoshkaTables
from recsys_embed.tables.multiplexed import MultiplexedConfig, MultiplexedTables
from recsys_embed.tables.per_feature import PerFeatureTables
from recsys_embed.tables.pruned import OptEmbedConfig, PrunedTables
from recsys_embed.tables.registry import layout_class, register_layout, registered_layouts

__all__ = [
    "CompactTables", "EmbeddingShapes", "Embeddings", "EvolutionConfig", "FusedTables", "MatryoshkaTables",
    "MultiplexedConfig", "MultiplexedTables", "OptEmbedConfig", "PerFeatureTables", "PrunedTables", "SearchResult",
    "TableLayout", "TableOptimizer", "evolutionary_search", "expected_collision_rate", "from_ebc_state_dict",
    "from_embeddings", "kjt_from_ids", "layout_class", "register_layout", "registered_layouts",
    "to_embedding_bag_collection",
]
