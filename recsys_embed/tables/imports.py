"""Import per-feature tables from existing torch/torchrec weights, and export them back.

* :func:`from_embeddings`: table group -> ``nn.Embedding`` / ``nn.EmbeddingBag`` / ``[rows, D]``
  tensor (e.g. the tables of a model trained elsewhere);
* :func:`from_ebc_state_dict`: a torchrec ``EmbeddingBagCollection`` state dict, whose keys
  are ``embedding_bags.<table>.weight``;
* :func:`to_embedding_bag_collection`: a torchrec ``EmbeddingBagCollection`` holding the same
  weights (pooled features only: an EBC has no per-position sequence output).

Row ``i`` of an imported table is id ``i`` of the table group, so imported weights must follow
the id layout of the fitted pipeline (``0`` missing, ``1`` out-of-vocabulary, ``2..`` values).
The optimizer state starts fresh.

Example::

    >>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
    >>> from recsys_embed.features import FeatureSpec
    >>> schema = Schema([FeatureSpec("user", embedding_dim=4), FeatureSpec("item", embedding_dim=4)])
    >>> user, item = nn.Embedding(10, 4), nn.Embedding(20, 4)
    >>> tables = from_embeddings(schema, {"user": user, "item": item})
    >>> kjt = KeyedJaggedTensor.from_lengths_sync(keys=["user", "item"], values=torch.tensor([3, 7]),
    ...                                           lengths=torch.tensor([1, 1]))
    >>> torch.equal(tables(kjt).pooled["item"][0], item.weight[7])
    True
    >>> ebc = to_embedding_bag_collection(tables)
    >>> torch.equal(ebc(kjt)["item"], tables(kjt).pooled["item"])
    True
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from recsys_embed.features import Schema
from recsys_embed.tables.base import TableOptimizer
from recsys_embed.tables.per_feature import PerFeatureTables

EBC_PREFIX = "embedding_bags."
EBC_SUFFIX = ".weight"


def _weight_of(table: str, source: nn.Module | torch.Tensor) -> torch.Tensor:
    if isinstance(source, (nn.Embedding, nn.EmbeddingBag)):
        return source.weight.detach()
    if isinstance(source, torch.Tensor):
        return source.detach()
    raise TypeError(
        f"table {table!r}: expected nn.Embedding, nn.EmbeddingBag or a [rows, dim] tensor, got {type(source).__name__}"
    )


def from_embeddings(
    schema: Schema,
    weights: Mapping[str, nn.Module | torch.Tensor],
    optimizer: TableOptimizer | None = None,
    device: torch.device | str | None = None,
) -> PerFeatureTables:
    """Per-feature tables holding copies of ``weights`` (table group -> module or tensor).

    Every table group of the schema needs one entry of shape ``[rows, D]`` with ``D`` the
    group's ``embedding_dim``; its ``rows`` become the table's row count.
    """
    groups = schema.tables
    missing, unexpected = sorted(set(groups) - set(weights)), sorted(set(weights) - set(groups))
    if missing or unexpected:
        raise ValueError(
            f"from_embeddings: weights must name every table group {sorted(groups)}; missing {missing}, unexpected {unexpected}"
        )
    tensors = {t: _weight_of(t, w) for t, w in weights.items()}
    for table, weight in tensors.items():
        dim = groups[table][0].embedding_dim
        if weight.dim() != 2 or weight.shape[1] != dim or not weight.is_floating_point():
            raise ValueError(
                f"table {table!r}: expected a float [rows, {dim}] weight (its schema embedding_dim), "
                f"got {weight.dtype} {tuple(weight.shape)}"
            )
    tables = PerFeatureTables(schema, {t: w.shape[0] for t, w in tensors.items()}, optimizer, device=device)
    with torch.no_grad():
        for table, target in tables.table_weights().items():
            target.copy_(tensors[table].to(device=target.device, dtype=target.dtype))
    return tables


def from_ebc_state_dict(
    schema: Schema,
    state_dict: Mapping[str, torch.Tensor],
    optimizer: TableOptimizer | None = None,
    device: torch.device | str | None = None,
) -> PerFeatureTables:
    """Per-feature tables from a torchrec ``EmbeddingBagCollection`` state dict whose table
    names are the schema's table groups (keys ``embedding_bags.<table>.weight``)."""
    weights = {}
    for key, value in state_dict.items():
        if not (key.startswith(EBC_PREFIX) and key.endswith(EBC_SUFFIX)):
            raise ValueError(f"from_ebc_state_dict: key {key!r} is not of the form 'embedding_bags.<table>.weight'")
        weights[key[len(EBC_PREFIX) : -len(EBC_SUFFIX)]] = value
    return from_embeddings(schema, weights, optimizer, device)


def to_embedding_bag_collection(tables: PerFeatureTables, device: torch.device | str | None = None) -> EmbeddingBagCollection:
    """A torchrec ``EmbeddingBagCollection`` (SUM pooling) with copies of the tables' weights;
    ``ebc(kjt)[feature]`` equals ``tables(kjt).pooled[feature]``."""
    sequences = [f.name for f in tables.features if f.is_sequence]
    if sequences:
        raise ValueError(
            f"to_embedding_bag_collection: sequence features {sequences} have per-position outputs, which an "
            "EmbeddingBagCollection cannot give; build the tables from a schema without them"
        )
    weights = tables.table_weights()
    configs = [
        EmbeddingBagConfig(
            num_embeddings=weight.shape[0],
            embedding_dim=weight.shape[1],
            name=table,
            feature_names=[f.name for f in tables.features if f.table == table],
            pooling=PoolingType.SUM,
        )
        for table, weight in weights.items()
    ]
    ebc = EmbeddingBagCollection(tables=configs, device=torch.device("meta"))
    ebc.to_empty(device=torch.device(device or "cpu"))
    ebc.load_state_dict({f"{EBC_PREFIX}{t}{EBC_SUFFIX}": w.detach().clone() for t, w in weights.items()})
    return ebc
