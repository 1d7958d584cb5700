"""The table-layout contract: what every layout (and every compression method) provides.

A layout maps a batch of sparse ids to per-feature embeddings, as torchrec's
``EmbeddingBagCollectionInterface`` maps a ``KeyedJaggedTensor`` to a ``KeyedTensor``.
Shapes: F features, B batch size, L a sequence feature's ``max_len``, D a feature's
output dim; ``kjt`` holds (at least) the layout's features as keys, each with B bags of
lengths ``lengths[f, b]`` (one id per categorical bag as a rule; a sequence bag holds the
history, oldest id first).

``forward(kjt)`` returns :class:`~recsys_embed.tables.base.Embeddings`: categorical feature
f gives ``pooled[f]`` ``[B, D_f]``; sequence feature s gives ``sequences[s]`` ``[B, L_s, D_s]``
(the most recent ``L_s`` ids, left-aligned, zero padded) and ``masks[s]`` ``[B, L_s]``, or,
for a layout that pools sequences, ``pooled[s]`` ``[B, D_s]``. :meth:`TableLayout.shapes`
says which, before any batch is seen. Ids outside a table group's range raise ``IndexError``.

Abstract (every layout implements): ``forward``, ``shapes``, ``num_parameters``,
``memory_bytes``, ``summary``, ``export_state`` / ``from_state``, ``num_ids``, and the
``features`` attribute. Hooks with defaults (a layout overrides what differs):
``regularization_loss``, ``dense_parameters``, ``fused_parameters``, ``training_views``,
``num_rows`` / ``rows_read`` (mini-batch aware L2), ``table_vectors``, ``compact``,
``check_prefix`` (Matryoshka), ``serving_layout``, ``quantization_source`` / ``quantization_tensors``, ``has_search_stage`` / ``search_stage`` and ``kernel_slots`` (sharding).
A layout registers its name with :func:`recsys_embed.tables.registry.register_layout`; its
``export_state()`` config names it under ``"layout"``, which is how an artifact finds the
class again.

Example (the contract seen through a per-feature layout)::

    >>> from recsys_embed.features import FeatureSpec, Schema
    >>> from recsys_embed.tables import PerFeatureTables, layout_class
    >>> schema = Schema([FeatureSpec("item_id", embedding_dim=4)])
    >>> tables = PerFeatureTables(schema, {"item_id": 10})
    >>> isinstance(tables, TableLayout), tables.num_ids("item_id"), tables.table_vectors("item_id").shape
    (True, 10, torch.Size([10, 4]))
    >>> tensors, config = tables.export_state()
    >>> copy = layout_class(config["layout"]).from_state(schema, tensors, config)
    >>> torch.equal(copy.table_vectors("item_id"), tables.table_vectors("item_id"))
    True
    >>> tables.regularization_loss() is None, tables.serving_layout() is tables
    (True, True)
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables.base import Embeddings, EmbeddingShapes, FusedTables
from recsys_embed.tables.evolution import EvolutionConfig, SearchResult


class TableLayout(nn.Module, abc.ABC):
    """Abstract base of every table layout: ``KeyedJaggedTensor -> Embeddings`` (see the module docstring).

    ``features``: the sparse features the layout embeds, the keys ``forward`` reads, in output order.
    ``layout_name``: the name it is registered under (set by ``register_layout``).
    """

    features: list[FeatureSpec]
    layout_name: ClassVar[str]

    # ---- abstract: every layout ---------------------------------------------------------

    @abc.abstractmethod
    def forward(self, kjt: KeyedJaggedTensor) -> Embeddings:
        """Per-feature embeddings of the batch ``kjt`` (shapes in the module docstring)."""

    @abc.abstractmethod
    def shapes(self, num_dense: int = 0) -> EmbeddingShapes:
        """The output shapes (``pooled`` feature -> D, ``sequences`` feature -> (L, D)), for
        building a model on top of this layout; ``num_dense`` is passed through."""

    @abc.abstractmethod
    def num_parameters(self) -> int:
        """Weights the layout stores (rows x dims, plus small learned tensors), not optimizer state."""

    @abc.abstractmethod
    def memory_bytes(self) -> int:
        """Bytes the layout really allocated for its weights and optimizer state."""

    @abc.abstractmethod
    def summary(self) -> str:
        """A readable table of what is stored where, ending with the parameter and byte totals."""

    @abc.abstractmethod
    def export_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, config)``: CPU tensors by name and a JSON-ready config with
        ``config["layout"] == layout_name``; :meth:`from_state` rebuilds the layout from them."""

    @classmethod
    @abc.abstractmethod
    def from_state(
        cls,
        schema: Schema,
        tensors: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        device: torch.device | str | None = None,
    ) -> TableLayout:
        """The layout :meth:`export_state` described: same outputs, same optimizer state."""

    @abc.abstractmethod
    def num_ids(self, group: str) -> int:
        """Ids of table group ``group`` lie in ``[0, num_ids(group))``; ``ValueError`` for an
        unknown group or one whose id range the layout does not know."""

    # ---- training hooks -----------------------------------------------------------------

    def regularization_loss(self) -> torch.Tensor | None:
        """A term the training loss adds (OptEmbed's threshold push), or ``None``: nothing to add."""
        return None

    def dense_parameters(self) -> list[dict[str, Any]]:
        """Extra optimizer param groups with their own settings (``{"params": [...], "lr": ...}``);
        the dense optimizer trains the rest of the layout's non-fused parameters at its defaults."""
        return []

    def fused_parameters(self) -> list[nn.Parameter]:
        """Parameters a fused optimizer updates inside backward, kept out of the dense optimizer:
        by default those of every fbgemm kernel (:class:`FusedTables`) in the layout."""
        return [p for module in self.modules() if isinstance(module, FusedTables) for p in module.parameters()]

    def training_views(self, emb: Embeddings) -> list[Embeddings]:
        """Views of ``emb`` whose model losses the trainer sums (Matryoshka: one per prefix, widest
        last; the trainer reports the last one's logits). Default: ``[emb]``."""
        return [emb]

    def num_rows(self) -> int:
        """How many rows the layout stores across its tables ("layout rows", numbered as
        :meth:`rows_read` numbers them): the length of the row frequencies of mini-batch aware L2."""
        raise self._not_rows("num_rows")

    def rows_read(self, kjt: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        """Feature -> the layout rows its output reads, aligned with :meth:`forward`'s output:
        ``[B, k]`` for a pooled feature, ``[B, L, k]`` for a sequence (k rows side by side in the
        output), ``-1`` where no row is read (an empty bag, a padding position)."""
        raise self._not_rows("rows_read")

    def _not_rows(self, what: str) -> ValueError:
        return ValueError(
            f"{type(self).__name__}.{what}: the outputs of layout {self._name()!r} are not its table rows "
            "(masked, trimmed or computed), so mini-batch aware L2 on them would not be the paper's; "
            "use a per_feature or multiplexed layout (or matryoshka over one)"
        )

    # ---- reading and serving ------------------------------------------------------------

    def table_vectors(self, group: str) -> torch.Tensor:
        """All vectors of table group ``group``: ``[num_ids(group), D]``, row i is what
        :meth:`forward` outputs in eval mode for id i (full ranking, a tied output layer).

        The default runs :meth:`forward` over every id of the group, in eval mode, and is
        detached. Layouts with a fused kernel (per_feature, multiplexed) read their rows
        directly: with gradients enabled their result carries a gradient that the fused
        optimizer applies in backward (a tied output layer trains the table), under
        ``torch.no_grad()`` it is a detached copy.
        """
        readers = [f for f in self.features if f.table == group]
        if not readers:
            raise ValueError(
                f"{type(self).__name__}: no feature reads table group {group!r}; "
                f"it has {list(dict.fromkeys(f.table for f in self.features))}"
            )
        spec = min(readers, key=lambda f: f.is_sequence)  # a categorical reader if there is one
        device = next(iter([*self.parameters(), *self.buffers()]), torch.zeros(())).device
        ids = torch.arange(self.num_ids(group), device=device)
        lengths = [torch.ones_like(ids) if f is spec else torch.zeros_like(ids) for f in self.features]
        kjt = KeyedJaggedTensor.from_lengths_sync([f.name for f in self.features], ids, torch.cat(lengths))
        was_training = self.training
        try:
            with torch.no_grad():
                out = self.eval()(kjt)
        finally:
            self.train(was_training)
        return out.sequences[spec.name][:, 0] if spec.name in out.sequences else out.pooled[spec.name]

    def compact(self) -> TableLayout:
        """A plain lookup copy (a ``CompactTables``) of the current (eval-mode) outputs, for serving
        and prefix exports; per_feature and multiplexed give ``CompactTables.copy_of(self)``.
        Default: refused, naming the layout."""
        raise ValueError(f"layout {self._name()!r} has no compact export (CompactTables.copy_of reads any layout's table_vectors)")

    def check_prefix(self, dim: int) -> None:
        """``ValueError`` unless the first ``dim`` columns of every output still embed each id on their
        own (Matryoshka trains and serves such prefixes). Default: they do."""

    def serving_layout(self) -> TableLayout:
        """The layout a trained model is saved and served with (pruned: its compact export). Default: itself."""
        return self

    def quantization_source(self) -> tuple[FusedTables, dict[str, Any]]:
        """For post-training quantization (:func:`recsys_embed.compression.quantized.quantize`): the
        fused kernel holding every row the layout reads, and the state config whose
        ``from_config(schema, config, storage=False)`` rebuilds its input side. Default: refused,
        the layout's storage is not one kernel of rows."""
        raise ValueError(
            f"layout {self._name()!r} has no kernel rows to quantize (computed or derived storage); "
            "post-training quantization takes a per_feature, multiplexed or compressed (row methods) layout"
        )

    def quantization_tensors(self) -> dict[str, torch.Tensor]:
        """For post-training quantization: the layout's own small tensors that are not kernel rows
        (a compressed layout's methods', e.g. mixed_dims' projections), kept in fp32 beside the
        quantized rows and given back as ``from_config(schema, config, storage=False, tensors=...)``.
        Default: none."""
        return {}

    def has_search_stage(self) -> bool:
        """Whether training ends with :meth:`search_stage` (which needs validation data). Default: no."""
        return False

    def search_stage(self, validate: Callable[[], float], config: EvolutionConfig) -> tuple[TableLayout, SearchResult]:
        """After the first training: search the layout's dims, scoring each candidate with
        ``validate()`` (e.g. validation AUC, the model in eval mode), and return a fresh layout to
        train again with the result."""
        raise ValueError(f"layout {self._name()!r} has no search stage")

    def kernel_slots(self) -> tuple[list[FeatureSpec], dict[str, int]]:
        """For sharding (``recsys_embed.jobs.sharding``): the features in the order their slots
        feed the layout's fused kernel, and per feature the kernel rows read per id (probes).
        A shardable layout also provides ``kernel``, ``kernel_inputs(kjt)``, ``dims``,
        ``state_config()`` and ``from_config(schema, config, device, storage=False)``."""
        raise ValueError(
            f"sharding: layout {self._name()!r} is not sharded; shard a per_feature or multiplexed layout"
        )

    def _name(self) -> str:
        return getattr(type(self), "layout_name", type(self).__name__)


def group_size(sizes: Mapping[str, int], group: str, layout: str) -> int:
    """``sizes[group]`` (a table group's rows or ids), or a ``ValueError`` naming the layout's groups."""
    if group not in sizes:
        raise ValueError(f"{layout}: no table group {group!r}; it has {list(sizes)}")
    return int(sizes[group])
