"""Pooling of sequence embeddings over their masks, and the flat input vector of a CTR model.

Shape notation: B batch, L sequence length, D embedding dim.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from recsys_embed.tables.base import Embeddings, EmbeddingShapes


def masked_sum(sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``sequence [B, L, D]`` over the positions where ``mask [B, L]`` is True -> ``[B, D]``."""
    return weighted_sum(sequence, mask.to(sequence.dtype))


def weighted_sum(sequence: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_l weights[b, l] * sequence[b, l]``: ``[B, L, D]`` and ``[B, L]`` -> ``[B, D]``.

    One batched matmul ``[B, 1, L] x [B, L, D]``: a single pass over the sequence forward and
    one over its gradient backward, where multiplying by a mask then summing takes several.
    """
    return torch.bmm(weights.unsqueeze(1), sequence).squeeze(1)


def masked_mean(sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``sequence [B, L, D]`` over ``mask [B, L]`` -> ``[B, D]``; zeros for an empty row.

    Example::

        >>> seq = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [5.0], [5.0]]])
        >>> mask = torch.tensor([[True, True, False], [False, False, False]])
        >>> masked_mean(seq, mask).tolist()
        [[2.0], [0.0]]
    """
    weights = mask.to(sequence.dtype)
    return weighted_sum(sequence, weights / weights.sum(1, keepdim=True).clamp(min=1))


def require_features(embeddings: Embeddings, pooled: Iterable[str], sequences: Iterable[str]) -> None:
    """Raise a ``ValueError`` naming the features a model needs but ``embeddings`` lacks."""
    missing = [f"pooled {f!r}" for f in pooled if f not in embeddings.pooled]
    missing += [f"sequence {f!r}" for f in sequences if f not in embeddings.sequences or f not in embeddings.masks]
    if missing:
        raise ValueError(
            f"embeddings lack {', '.join(missing)}; they hold pooled {sorted(embeddings.pooled)} "
            f"and sequences {sorted(embeddings.sequences)} (build the model from the table layout's shapes())"
        )


class FlatInputs(nn.Module):
    """The flat input of an MLP: every pooled feature, every sequence feature not in ``skip``
    mean-pooled over its mask, then the dense features, concatenated in ``shapes`` order.

    ``forward(embeddings, dense [B, num_dense]) -> [B, width]``, which is
    ``flat(features(embeddings, dense), dense)``: models that also need the feature vectors one
    by one (AutoInt, FM) call the two steps and pool each sequence once.

    Example::

        >>> shapes = EmbeddingShapes(pooled={"item": 4}, sequences={"hist": (3, 4)}, num_dense=2)
        >>> flat = FlatInputs(shapes)
        >>> emb = Embeddings(pooled={"item": torch.ones(5, 4)},
        ...                  sequences={"hist": torch.ones(5, 3, 4)},
        ...                  masks={"hist": torch.ones(5, 3, dtype=torch.bool)})
        >>> flat.width, flat(emb, torch.zeros(5, 2)).shape, flat.common_dim("FM")
        (10, torch.Size([5, 10]), 4)
    """

    def __init__(self, shapes: EmbeddingShapes, skip: Iterable[str] = ()) -> None:
        super().__init__()
        skip = set(skip)
        self.pooled = list(shapes.pooled)
        self.sequences = [s for s in shapes.sequences if s not in skip]
        self.num_dense = shapes.num_dense
        self.dims = {**shapes.pooled, **{s: shapes.sequences[s][1] for s in self.sequences}}
        self.width = sum(self.dims.values()) + shapes.num_dense

    def features(self, embeddings: Embeddings, dense: torch.Tensor) -> list[torch.Tensor]:
        """The vector ``[B, D_f]`` of each feature (pooled, then sequences mean-pooled), after
        checking that ``embeddings`` and ``dense`` fit the shapes."""
        require_features(embeddings, self.pooled, self.sequences)
        if dense.dim() != 2 or dense.shape[1] != self.num_dense:
            raise ValueError(f"dense must be [B, {self.num_dense}] (num_dense of the shapes), got {tuple(dense.shape)}")
        vectors = [embeddings.pooled[f] for f in self.pooled]
        return vectors + [masked_mean(embeddings.sequences[s], embeddings.masks[s]) for s in self.sequences]

    def flat(self, features: list[torch.Tensor], dense: torch.Tensor) -> torch.Tensor:
        """``features`` (as :meth:`features` gives them) and ``dense`` concatenated: ``[B, width]``."""
        return torch.cat([*features, dense.to(features[0].dtype) if features else dense], dim=1)

    def forward(self, embeddings: Embeddings, dense: torch.Tensor) -> torch.Tensor:
        return self.flat(self.features(embeddings, dense), dense)

    def common_dim(self, model: str) -> int:
        """The one embedding dim D all features share, for a model whose fields must have one
        dim (``model`` names it in the ``ValueError`` raised otherwise)."""
        if len(set(self.dims.values())) != 1:
            got = ", ".join(f"{name}: {dim}" for name, dim in self.dims.items()) or "no features"
            raise ValueError(
                f"{model} needs every pooled and sequence feature to have one embedding dim (its fields interact "
                f"by dot products), got {got}; give them one embedding_dim in the schema"
            )
        return next(iter(self.dims.values()))


def stack_fields(vectors: Sequence[torch.Tensor], dense: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
    """The field matrix ``[B, F + n, d]`` of field models (AutoInt, FM): ``vectors`` (each
    ``[B, d]``), then each dense feature ``j`` as its value times the learned vector ``numeric[j]``
    (``dense [B, n]``, ``numeric [n, d]``).

    Example::

        >>> stack_fields([torch.ones(2, 3)], torch.tensor([[2.0], [0.5]]), torch.ones(1, 3))[:, 1].tolist()
        [[2.0, 2.0, 2.0], [0.5, 0.5, 0.5]]
    """
    return torch.cat([x.unsqueeze(1) for x in vectors] + [dense.unsqueeze(-1) * numeric], dim=1)


def pack_positions(
    sequences: Sequence[torch.Tensor], mask: torch.Tensor
) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The real positions of ``sequences`` (each ``[B, L, D_i]``, one ``mask [B, L]``), packed:
    ``((rows [N], cols [N]), [N, sum D_i])`` with position ``j`` at ``sequences[:][rows[j], cols[j]]``,
    in row-major order (``rows`` ascending). Padding is never copied or computed on.

    Example::

        >>> seq = torch.arange(6.0).reshape(1, 3, 2)
        >>> (rows, cols), packed = pack_positions([seq, -seq], torch.tensor([[True, False, True]]))
        >>> cols.tolist(), packed.tolist()
        ([0, 2], [[0.0, 1.0, -0.0, -1.0], [4.0, 5.0, -4.0, -5.0]])
    """
    rows, cols = mask.nonzero(as_tuple=True)
    return (rows, cols), torch.cat([s[rows, cols] for s in sequences], dim=-1)


def segment_sum(values: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
    """``out[b] = sum_{j: rows[j] = b} values[j]``: ``[N, D]`` -> ``[batch, D]`` (zeros where no ``j``).

    Example::

        >>> segment_sum(torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([0, 0, 2]), 3).tolist()
        [[3.0], [0.0], [4.0]]
    """
    return values.new_zeros(batch, values.shape[-1]).index_add(0, rows, values)
