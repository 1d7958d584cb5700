"""Embedding table layouts: each maps a KeyedJaggedTensor to per-feature embeddings."""

from recsys_embed.tables.base import Embeddings, EmbeddingShapes, FusedTables, TableOptimizer
from recsys_embed.tables.per_feature import PerFeatureTables

__all__ = ["Embeddings", "EmbeddingShapes", "FusedTables", "PerFeatureTables", "TableOptimizer"]
