"""Matryoshka tables: one table trained to serve at several embedding widths.

Training sums the model loss over views of the embeddings, one per prefix p, in which every
column ``>= p`` is zero (Kusupati et al. 2022, "Matryoshka Representation Learning"), so the
first p columns of each row carry a usable embedding on their own. After training,
:meth:`MatryoshkaTables.at_dim` exports a table storing only the first d columns of each row.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import Schema
from recsys_embed.tables.base import EmbeddingShapes, Embeddings, check_layout
from recsys_embed.tables.compact import CompactTables
from recsys_embed.tables.per_feature import PerFeatureTables


def prefix_view(emb: Embeddings, dim: int) -> Embeddings:
    """``emb`` with every column ``>= dim`` zeroed (same shapes, same sequence masks)."""

    def cut(x: torch.Tensor) -> torch.Tensor:
        return x * (torch.arange(x.shape[-1], device=x.device) < dim).to(x.dtype)

    return Embeddings(
        pooled={f: cut(x) for f, x in emb.pooled.items()},
        sequences={f: cut(x) for f, x in emb.sequences.items()},
        masks=emb.masks,
    )


def compact_of(layout: nn.Module) -> CompactTables:
    """A plain lookup copy of ``layout``'s current outputs: layouts with a ``compact()`` export
    (pruned tables), per-feature tables, or compact tables themselves."""
    if isinstance(layout, CompactTables):
        return layout
    if hasattr(layout, "compact"):
        return layout.compact()
    if isinstance(layout, PerFeatureTables):
        weights = {t: w.detach() for t, w in layout.table_weights().items()}
        return CompactTables(Schema(features=list(layout.features)), layout.rows, weights)
    raise TypeError(
        f"{type(layout).__name__} has no compact export: prefix tables need per-row outputs "
        "(PerFeatureTables, PrunedTables, CompactTables)"
    )


class MatryoshkaTables(nn.Module):
    """Wraps a layout whose outputs are at least ``max(prefixes)`` wide.

    ``forward`` is the wrapped layout's (full width); :meth:`training_views` gives one
    :class:`Embeddings` per prefix for the trainer to sum the loss over; :meth:`at_dim` serves
    a prefix. Regularization and dense parameters of the wrapped layout pass through.

    Example::

        >>> from recsys_embed.features import FeatureSpec
        >>> base = PerFeatureTables(Schema([FeatureSpec("item_id", embedding_dim=8)]), {"item_id": 10})
        >>> tables = MatryoshkaTables(base, prefixes=[2, 4, 8])
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(["item_id"], torch.tensor([3, 4]), torch.tensor([1, 1]))
        >>> full = tables(kjt).pooled["item_id"]
        >>> [int((v.pooled["item_id"] != 0).sum(1).max()) for v in tables.training_views(tables(kjt))]
        [2, 4, 8]
        >>> small = tables.at_dim(4)
        >>> torch.equal(small(kjt).pooled["item_id"], full[:, :4]), small.memory_bytes()
        (True, 160)
    """

    def __init__(self, base: nn.Module, prefixes: Sequence[int] = (4, 8, 16)) -> None:
        super().__init__()
        self.base = base
        self.prefixes = sorted({int(p) for p in prefixes})
        shapes = base.shapes()
        widths = list(shapes.pooled.values()) + [d for _, d in shapes.sequences.values()]
        narrowest = min(widths, default=0)
        if not self.prefixes or self.prefixes[0] < 1 or self.prefixes[-1] > narrowest:
            raise ValueError(
                f"matryoshka prefixes must be dims in [1, {narrowest}] (the narrowest feature output of "
                f"{type(base).__name__}), got {list(prefixes)}"
            )

    def forward(self, kjt: KeyedJaggedTensor) -> Embeddings:
        return self.base(kjt)

    def training_views(self, emb: Embeddings) -> list[Embeddings]:
        """One view per prefix, columns beyond it zeroed; the trainer sums the model loss over them."""
        return [prefix_view(emb, p) for p in self.prefixes]

    def at_dim(self, dim: int, keep_width: bool = False) -> CompactTables:
        """A table storing the first ``dim`` columns only; its outputs equal the first ``dim``
        columns of this one's (eval mode), or, with ``keep_width``, this one's with the tail zeroed
        so a model built for the full width runs on it unchanged."""
        return compact_of(self.base).prefix(dim, keep_width)

    def num_rows(self) -> int:
        """The wrapped layout's rows (mini-batch aware L2)."""
        return self.base.num_rows()

    def rows_read(self, kjt: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        """The rows the wrapped layout's outputs read (mini-batch aware L2)."""
        return self.base.rows_read(kjt)

    def regularization_loss(self) -> torch.Tensor:
        hook = getattr(self.base, "regularization_loss", None)
        return hook() if hook else torch.zeros(())

    def dense_parameters(self) -> list[dict[str, Any]]:
        hook = getattr(self.base, "dense_parameters", None)
        return hook() if hook else []

    def shapes(self, num_dense: int = 0) -> EmbeddingShapes:
        return self.base.shapes(num_dense)

    def num_parameters(self) -> int:
        return self.base.num_parameters()

    def memory_bytes(self) -> int:
        return self.base.memory_bytes()

    def summary(self) -> str:
        return f"matryoshka prefixes {self.prefixes} over:\n{self.base.summary()}"

    def export_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The wrapped layout's tensors; its config nested under ``base`` with its class path."""
        tensors, base_config = self.base.export_state()
        base_class = f"{type(self.base).__module__}:{type(self.base).__qualname__}"
        return tensors, {"layout": "matryoshka", "prefixes": self.prefixes, "base_class": base_class, "base": base_config}

    @classmethod
    def from_state(
        cls,
        schema: Schema,
        tensors: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        device: torch.device | str | None = None,
    ) -> MatryoshkaTables:
        """Rebuild the wrapped layout (a ``recsys_embed.tables`` class with ``from_state``) and the wrapper."""
        check_layout(config, "matryoshka")
        module_name, _, class_name = str(config.get("base_class", "")).partition(":")
        if not module_name.startswith("recsys_embed.tables."):
            raise ValueError(f"matryoshka state: base_class {config.get('base_class')!r} is not a recsys_embed.tables layout")
        base_cls = getattr(importlib.import_module(module_name), class_name, None)
        if not hasattr(base_cls, "from_state"):
            raise ValueError(f"matryoshka state: base_class {config['base_class']!r} has no from_state")
        return cls(base_cls.from_state(schema, tensors, config["base"], device=device), config["prefixes"])
