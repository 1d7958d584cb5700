"""Matryoshka tables: one table trained to serve at several embedding widths.

Training sums the model loss over views of the embeddings, one per prefix p, in which every
column ``>= p`` is zero (Kusupati et al. 2022, "Matryoshka Representation Learning"), so the
first p columns of each row carry a usable embedding on their own. After training,
:meth:`MatryoshkaTables.at_dim` exports a table storing only the first d columns of each row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables.base import EmbeddingShapes, Embeddings, check_layout
from recsys_embed.tables.compact import CompactTables
from recsys_embed.tables.contract import TableLayout
from recsys_embed.tables.registry import layout_class, register_layout


def prefix_view(emb: Embeddings, dim: int) -> Embeddings:
    """``emb`` with every column ``>= dim`` zeroed (same shapes, same sequence masks)."""

    def cut(x: torch.Tensor) -> torch.Tensor:
        return x * (torch.arange(x.shape[-1], device=x.device) < dim).to(x.dtype)

    return Embeddings(
        pooled={f: cut(x) for f, x in emb.pooled.items()},
        sequences={f: cut(x) for f, x in emb.sequences.items()},
        masks=emb.masks,
    )


@register_layout("matryoshka")
class MatryoshkaTables(TableLayout):
    """Wraps a layout whose outputs are at least ``max(prefixes)`` wide.

    ``forward`` is the wrapped layout's (full width); :meth:`training_views` gives one
    :class:`Embeddings` per prefix for the trainer to sum the loss over; :meth:`at_dim` serves
    a prefix (of the wrapped layout's :meth:`~TableLayout.compact` export). Regularization,
    dense parameters, row reads and table vectors of the wrapped layout pass through.

    Example::

        >>> from recsys_embed.features import FeatureSpec
        >>> from recsys_embed.tables.per_feature import PerFeatureTables
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

    def __init__(self, base: TableLayout, prefixes: Sequence[int] = (4, 8, 16)) -> None:
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
        base.check_prefix(self.prefixes[0])

    @property
    def features(self) -> list[FeatureSpec]:  # type: ignore[override]
        return self.base.features

    def forward(self, kjt: KeyedJaggedTensor) -> Embeddings:
        return self.base(kjt)

    def training_views(self, emb: Embeddings) -> list[Embeddings]:
        """One view per prefix, columns beyond it zeroed; the trainer sums the model loss over them."""
        return [prefix_view(emb, p) for p in self.prefixes]

    def at_dim(self, dim: int, keep_width: bool = False) -> CompactTables:
        """A table storing the first ``dim`` columns only; its outputs equal the first ``dim``
        columns of this one's (eval mode), or, with ``keep_width``, this one's with the tail zeroed
        so a model built for the full width runs on it unchanged."""
        return self.base.compact().prefix(dim, keep_width)

    def compact(self) -> CompactTables:
        return self.base.compact()

    def regularization_loss(self) -> torch.Tensor | None:
        return self.base.regularization_loss()

    def dense_parameters(self) -> list[dict[str, Any]]:
        return self.base.dense_parameters()

    def num_ids(self, group: str) -> int:
        return self.base.num_ids(group)

    def table_vectors(self, group: str) -> torch.Tensor:
        return self.base.table_vectors(group)

    def num_rows(self) -> int:
        return self.base.num_rows()

    def rows_read(self, kjt: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        return self.base.rows_read(kjt)

    def shapes(self, num_dense: int = 0) -> EmbeddingShapes:
        return self.base.shapes(num_dense)

    def num_parameters(self) -> int:
        return self.base.num_parameters()

    def memory_bytes(self) -> int:
        return self.base.memory_bytes()

    def summary(self) -> str:
        return f"matryoshka prefixes {self.prefixes} over:\n{self.base.summary()}"

    def export_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The wrapped layout's tensors; its config (which names its registered layout) nested under ``base``."""
        tensors, base_config = self.base.export_state()
        return tensors, {"layout": "matryoshka", "prefixes": self.prefixes, "base": base_config}

    @classmethod
    def from_state(
        cls,
        schema: Schema,
        tensors: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        device: torch.device | str | None = None,
    ) -> MatryoshkaTables:
        """Rebuild the wrapped layout, found by the name in ``config["base"]["layout"]`` in the layout
        registry, and the wrapper. States written before the registry also hold a ``base_class``
        module path; it is not imported (the base config names the layout)."""
        check_layout(config, "matryoshka")
        base = config.get("base")
        if not isinstance(base, Mapping) or not isinstance(base.get("layout"), str):
            raise ValueError(
                f"matryoshka state: 'base' must be the wrapped layout's config with its registered name under 'layout', "
                f"got {base!r}"
            )
        base_cls = layout_class(base["layout"])
        return cls(base_cls.from_state(schema, tensors, base, device=device), config["prefixes"])
