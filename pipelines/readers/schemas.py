"""Shared pieces of the readers' default schemas."""

from __future__ import annotations

from typing import Literal

from recsys_embed.features import FeatureSpec

CategoricalIds = Literal["vocabulary", "hashing"]


def categorical_feature(
    name: str, ids: CategoricalIds, min_count: int, hash_buckets: int, embedding_dim: int
) -> FeatureSpec:
    """A categorical feature with a fitted vocabulary (values seen ``min_count`` times, the
    rest OOV) or ``hash_buckets`` stable hash buckets salted by its name."""
    if ids == "hashing":
        return FeatureSpec(name, ids="hashing", hash_buckets=hash_buckets, salt=name, embedding_dim=embedding_dim)
    if ids == "vocabulary":
        return FeatureSpec(name, min_count=min_count, embedding_dim=embedding_dim)
    raise ValueError(f"feature {name!r}: categorical_ids must be 'vocabulary' or 'hashing', got {ids!r}")
