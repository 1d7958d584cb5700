"""Pruned tables: OptEmbed (Lyu et al. 2022, "OptEmbed: Learning Optimal Embedding Table for
Click-through Rate Prediction"): learnable row pruning and a per-field dim search.

A *field* here is a table group (``hist_item_id`` prunes and sizes with ``item_id``): a row
is kept or pruned for every feature reading it, and a table has one dim.

Row pruning. Field f has a learnable threshold ``t_f``; row e is kept when its L1 norm
exceeds it: ``e' = S(||e||_1 - t_f) * e`` with S the unit step, trained through the
straight-through gradient ``S'(x) = 2 - 4|x|`` for ``|x| <= 0.4``, ``0.4`` for
``0.4 < |x| <= 1``, ``0`` beyond. The loss gets ``alpha * sum_f exp(-t_f)``, which pushes
thresholds up; the model loss pushes useful rows above them. Thresholds train in the
trainer's dense optimizer at their own learning rate (:meth:`PrunedTables.dense_parameters`).

Dim search. The same (supernet) training keeps only a prefix of each row: per sample and
field a dim d is drawn uniformly from ``[min_dim, D_f]`` and columns ``>= d`` are zeroed.
After training, :meth:`PrunedTables.search_dims` runs
:func:`~recsys_embed.tables.evolution.evolutionary_search` over per-field dims, scoring each
candidate by validation AUC with the table serving at those dims.

Retraining. :meth:`PrunedTables.retrain` gives a fresh layout holding the *initial* weights
(regenerated from ``config.seed``) with the row masks frozen and the chosen dims fixed.

Export. :meth:`PrunedTables.compact` stores only kept rows and chosen dims
(:class:`~recsys_embed.tables.compact.CompactTables`); a pruned id reads a zero vector (not the
OOV row), which is what the masked table outputs for it, so the compact outputs equal the
masked table's.

Storage is fbgemm's fused kernel (one slot per feature, ``max_len`` slots per sequence): its
output row for a one-id bag *is* the table row, so the norm, mask and straight-through
gradient are computed on the kernel output and the row gradient flows back into the fused
update.

The three stages (with a toy loss and a toy validation score in place of the model's)::

    >>> from recsys_embed.features import FeatureSpec
    >>> schema = Schema([FeatureSpec("item_id", embedding_dim=8), FeatureSpec("cat", embedding_dim=4)])
    >>> tables = PrunedTables(schema, {"item_id": 100, "cat": 10})
    >>> thresholds = torch.optim.Adam(tables.dense_parameters())  # their own learning rate
    >>> kjt = KeyedJaggedTensor.from_lengths_sync(["item_id", "cat"], torch.tensor([3, 9, 1, 2]),
    ...                                           torch.tensor([1, 1, 1, 1]))
    >>> out = tables(kjt)  # supernet: a prefix dim drawn per sample and field
    >>> loss = sum(x.pow(2).sum() for x in out.pooled.values()) + tables.regularization_loss()
    >>> loss.backward()  # the fused kernel updates the rows inside backward
    >>> thresholds.step()
    >>> result = tables.eval().search_dims(lambda: -sum(tables.dims), EvolutionConfig(rounds=3))
    >>> retrained = tables.retrain()  # initial weights, frozen row masks, the dims found
    >>> retrained.dims == result.dims, retrained.dense_parameters()
    (True, [])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables.base import EmbeddingShapes, Embeddings, TableOptimizer, check_layout
from recsys_embed.tables.compact import CompactTables
from recsys_embed.tables.contract import TableLayout, group_size
from recsys_embed.tables.evolution import EvolutionConfig, SearchResult, evolutionary_search
from recsys_embed.tables.per_feature import PerFeatureTables
from recsys_embed.tables.registry import register_layout


class _StraightThroughStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        size = x.abs()
        slope = torch.where(size <= 0.4, 2 - 4 * size, torch.where(size <= 1, 0.4, 0.0))
        return grad * slope


def straight_through_step(x: torch.Tensor) -> torch.Tensor:
    """``1.0`` where ``x > 0`` else ``0.0``, with OptEmbed's piecewise straight-through gradient.

    >>> x = torch.tensor([-0.5, 0.2, 2.0], requires_grad=True)
    >>> y = straight_through_step(x)
    >>> y.sum().backward()
    >>> y.tolist(), [round(g, 4) for g in x.grad.tolist()]
    ([0.0, 1.0, 1.0], [0.4, 1.2, 0.0])
    """
    return _StraightThroughStep.apply(x)


@dataclass(frozen=True)
class OptEmbedConfig:
    """Knobs of :class:`PrunedTables`.

    ``alpha``: weight of ``sum_f exp(-t_f)``; ``threshold_init``/``threshold_lr``: initial value
    and learning rate of the thresholds; ``sample_dims``: draw prefix dims in training (the
    supernet; off gives row pruning only); ``min_dim``: smallest dim drawn; ``init_scale``,
    ``seed``: the initial weights ``U(-init_scale, init_scale)``, regenerated for retraining.
    """

    alpha: float = 1e-4
    threshold_init: float = 0.0
    threshold_lr: float = 1e-3
    sample_dims: bool = True
    min_dim: int = 1
    init_scale: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.threshold_lr <= 0 or self.init_scale <= 0 or self.min_dim < 1:
            raise ValueError(f"OptEmbedConfig needs alpha >= 0, threshold_lr > 0, init_scale > 0, min_dim >= 1; got {self}")


@register_layout("pruned")
class PrunedTables(TableLayout):
    """OptEmbed tables: per-feature fused tables with learned row masks and prefix dims.

    Input: a ``KeyedJaggedTensor`` of the schema's sparse features (categorical bags hold at
    most one id). Output: :class:`Embeddings` shaped like :class:`PerFeatureTables`' (``[B, D]``,
    ``[B, L, D]``, full width D); pruned rows and columns beyond the field's dim are zero.
    ``fields`` lists the table groups; ``dims`` and thresholds follow that order.

    Example::

        >>> from recsys_embed.features import FeatureSpec
        >>> schema = Schema([FeatureSpec("item_id", embedding_dim=4),
        ...                  FeatureSpec("hist", kind="sequence", table="item_id", max_len=3, embedding_dim=4)])
        >>> tables = PrunedTables(schema, {"item_id": 10}, OptEmbedConfig(threshold_init=0.1)).eval()
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(["item_id", "hist"], torch.tensor([5, 7, 2, 3, 4]),
        ...                                           torch.tensor([1, 1, 3, 0]))
        >>> tables.use_dims([2])
        >>> out = tables(kjt)
        >>> out.pooled["item_id"].shape, bool((out.pooled["item_id"][:, 2:] == 0).all())
        (torch.Size([2, 4]), True)
        >>> compact = tables.compact()
        >>> torch.equal(compact(kjt).sequences["hist"], out.sequences["hist"])
        True
        >>> compact.memory_bytes() < tables.memory_bytes()
        True
    """

    def __init__(
        self,
        schema: Schema,
        num_embeddings: Mapping[str, int],
        config: OptEmbedConfig | None = None,
        optimizer: TableOptimizer | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.schema = schema
        self.config = config or OptEmbedConfig()
        self.optimizer = optimizer or TableOptimizer()
        self.tables = PerFeatureTables(schema, num_embeddings, self.optimizer, self.config.init_scale, device)
        self.fields = list(schema.tables)
        self.rows = {t: int(num_embeddings[t]) for t in self.fields}
        self.max_dims = [schema.tables[t][0].embedding_dim for t in self.fields]
        with torch.no_grad():
            for weight, initial in zip(self.tables.table_weights().values(), self.initial_weights().values()):
                weight.copy_(initial)
        device = torch.device(device or "cpu")
        self.thresholds = nn.Parameter(torch.full((len(self.fields),), self.config.threshold_init, device=device))
        self.dims: list[int] | None = None
        self.frozen = False

    @property
    def features(self) -> list[FeatureSpec]:  # type: ignore[override]
        return self.tables.features

    def num_ids(self, group: str) -> int:
        return group_size(self.rows, group, "pruned")

    def initial_weights(self) -> dict[str, torch.Tensor]:
        """Table -> ``[rows, D]`` initial weights, regenerated from ``config.seed`` (CPU)."""
        generator = torch.Generator().manual_seed(self.config.seed)
        scale = self.config.init_scale
        return {t: torch.empty(self.rows[t], d).uniform_(-scale, scale, generator=generator) for t, d in zip(self.fields, self.max_dims)}

    def use_dims(self, dims: Sequence[int] | None) -> None:
        """Output per-field ``dims`` (``fields`` order) whenever dims are not being sampled (eval
        mode, or ``sample_dims=False``); ``None`` for full width. The search's ``evaluate`` calls it."""
        if self.frozen:
            raise ValueError("dims are fixed after retrain(); build another layout with retrain(dims) to change them")
        self.dims = None if dims is None else self._checked_dims(dims)

    def search_dims(self, validate: Callable[[], float], config: EvolutionConfig | None = None) -> SearchResult:
        """Evolutionary search of per-field dims; ``validate()`` scores the model (in eval mode)
        with this layout serving at the candidate dims, e.g. validation AUC. Leaves the best dims
        in use, ready for :meth:`retrain` or :meth:`compact`."""

        def evaluate(dims: list[int]) -> float:
            self.use_dims(dims)
            return validate()

        result = evolutionary_search(evaluate, self.max_dims, config or EvolutionConfig(min_dim=self.config.min_dim))
        self.use_dims(result.dims)
        return result

    def _checked_dims(self, dims: Sequence[int]) -> list[int]:
        dims = [int(d) for d in dims]
        bad = [f for f, d, top in zip(self.fields, dims, self.max_dims) if not 1 <= d <= top]
        if len(dims) != len(self.fields) or bad:
            raise ValueError(f"dims must give one dim in [1, D] per field {self.fields} (D = {self.max_dims}); got {dims}")
        return dims

    def _kept(self, field: int) -> torch.Tensor:
        return getattr(self, f"kept_{field}")

    def row_masks(self) -> dict[str, torch.Tensor]:
        """Table -> ``[rows]`` bool, True for kept rows (learned: L1 norm > threshold; frozen after retrain)."""
        if self.frozen:
            return {t: self._kept(i) for i, t in enumerate(self.fields)}
        with torch.no_grad():
            weights = self.tables.table_weights().values()
            return {t: (w.abs().sum(-1) - self.thresholds[i]) > 0 for i, (t, w) in enumerate(zip(self.fields, weights))}

    def _dim_masks(self, batch: int, device: torch.device) -> list[torch.Tensor | None]:
        """Per field: ``[B, D]`` sampled prefix masks (supernet training), ``[D]`` for fixed dims, or None."""
        if self.training and self.config.sample_dims and not self.frozen:
            masks: list[torch.Tensor | None] = []
            for top in self.max_dims:
                dims = torch.randint(min(self.config.min_dim, top), top + 1, (batch,), device=device)
                masks.append(torch.arange(top, device=device)[None, :] < dims[:, None])
            return masks
        if self.dims is None:
            return [None] * len(self.fields)
        return [torch.arange(top, device=device) < d for top, d in zip(self.max_dims, self.dims)]

    def forward(self, kjt: KeyedJaggedTensor) -> Embeddings:
        emb = self.tables(kjt)
        inputs = self.tables.kernel_inputs(kjt)  # the walk forward just made
        batch = kjt.stride()
        dim_masks = self._dim_masks(batch, self.thresholds.device)
        out = Embeddings(masks=emb.masks)
        for spec in self.schema.sparse_features:
            field = self.fields.index(spec.table)  # type: ignore[arg-type]
            x = emb.sequences[spec.name] if spec.is_sequence else emb.pooled[spec.name]
            ids = inputs.slot_rows(spec.name).squeeze(-1) if self.frozen or not spec.is_sequence else None  # one id per bag
            if self.frozen:
                keep = self._kept(field)[ids.clamp(min=0)] & (ids >= 0)  # type: ignore[union-attr]
                x = x * keep.unsqueeze(-1).to(x.dtype)
            else:
                x = x * straight_through_step(x.abs().sum(-1) - self.thresholds[field]).unsqueeze(-1)
            mask = dim_masks[field]
            if mask is not None:
                x = x * (mask[:, None, :] if spec.is_sequence and mask.dim() == 2 else mask).to(x.dtype)
            (out.sequences if spec.is_sequence else out.pooled)[spec.name] = x
        return out

    def regularization_loss(self) -> torch.Tensor:
        """``alpha * sum_f exp(-t_f)`` while thresholds learn; zero once frozen."""
        if self.frozen:
            return self.thresholds.new_zeros(())
        return self.config.alpha * torch.exp(-self.thresholds).sum()

    def dense_parameters(self) -> list[dict[str, Any]]:
        """The thresholds with their own learning rate (none once frozen)."""
        return [] if self.frozen else [{"params": [self.thresholds], "lr": self.config.threshold_lr}]

    def has_search_stage(self) -> bool:
        """True until retrained: supernet training is followed by :meth:`search_stage`."""
        return not self.frozen

    def search_stage(self, validate: Callable[[], float], config: EvolutionConfig) -> tuple[PrunedTables, SearchResult]:
        """:meth:`search_dims` on ``validate()``, then :meth:`retrain` at the dims found."""
        result = self.search_dims(validate, config)
        return self.retrain(result.dims), result

    def serving_layout(self) -> CompactTables:
        """The :meth:`compact` export: kept rows and chosen dims only."""
        return self.compact()

    def retrain(self, dims: Sequence[int] | None = None) -> PrunedTables:
        """A fresh layout for the retraining stage: initial weights, this layout's row masks
        frozen, ``dims`` (default: the dims in use, else full width) fixed."""
        fresh = PrunedTables(self.schema, self.rows, self.config, self.optimizer, self.thresholds.device)
        fresh._freeze(list(self.row_masks().values()), self._checked_dims(dims or self.dims or self.max_dims))
        return fresh

    def _freeze(self, kept: list[torch.Tensor], dims: list[int]) -> None:
        for i, (table, mask) in enumerate(zip(self.fields, kept)):
            if mask.shape != (self.rows[table],) or mask.dtype != torch.bool:
                raise ValueError(f"table {table!r}: row mask must be bool [{self.rows[table]}], got {mask.dtype} {tuple(mask.shape)}")
            self.register_buffer(f"kept_{i}", mask.detach().clone().to(self.thresholds.device))
        self.thresholds.requires_grad_(False)
        self.dims, self.frozen = dims, True

    def compact(self) -> CompactTables:
        """The serving table: kept rows only, trimmed to the dims in use, outputs zero padded to D."""
        dims = self.dims or self.max_dims
        masks = self.row_masks()
        weights, kept_ids = {}, {}
        for (table, weight), dim in zip(self.tables.table_weights().items(), dims):
            kept = masks[table].nonzero().squeeze(1)
            weights[table] = weight.detach()[kept, :dim]
            kept_ids[table] = kept.to(torch.int32 if self.rows[table] < 2**31 else torch.int64)
        return CompactTables(self.schema, self.rows, weights, kept_ids, dict(zip(self.fields, self.max_dims)))

    def shapes(self, num_dense: int = 0) -> EmbeddingShapes:
        return self.tables.shapes(num_dense)

    def num_parameters(self) -> int:
        return self.tables.num_parameters() + self.thresholds.numel()

    def memory_bytes(self) -> int:
        """Kernel weights and optimizer state, thresholds and frozen row masks."""
        masks = [self._kept(i) for i in range(len(self.fields))] if self.frozen else []
        return self.tables.memory_bytes() + sum(t.numel() * t.element_size() for t in [self.thresholds, *masks])

    def summary(self) -> str:
        dims = self.dims or self.max_dims
        lines = [f"{'table':<20} {'rows':>10} {'kept':>10} {'D':>4} {'dim':>4} {'threshold':>10}"]
        for i, (table, mask) in enumerate(self.row_masks().items()):
            lines.append(
                f"{table:<20} {self.rows[table]:>10} {int(mask.sum()):>10} {self.max_dims[i]:>4} {dims[i]:>4} {float(self.thresholds[i].detach()):>10.4f}"
            )
        stage = "retraining (masks frozen)" if self.frozen else "supernet (thresholds learning)"
        lines.append(
            f"{stage}: parameters {self.num_parameters():,}  memory {self.memory_bytes():,} bytes; "
            f"compact export {self.compact().memory_bytes():,} bytes"
        )
        return "\n".join(lines)

    def export_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The per-feature kernel's tensors (weights, fused optimizer state) plus ``thresholds``
        and, once frozen, ``kept/<table>``; a JSON-ready config nesting the kernel's."""
        tensors, tables_config = self.tables.export_state()
        tensors["thresholds"] = self.thresholds.detach().cpu().clone()
        if self.frozen:
            tensors.update({f"kept/{t}": m.cpu().clone() for t, m in self.row_masks().items()})
        config = {"layout": "pruned", "tables": tables_config, "config": asdict(self.config), "frozen": self.frozen, "dims": self.dims}
        return tensors, config

    @classmethod
    def from_state(
        cls,
        schema: Schema,
        tensors: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        device: torch.device | str | None = None,
    ) -> PrunedTables:
        """Rebuild the layout :meth:`export_state` described: same outputs, same optimizer state."""
        check_layout(config, "pruned")
        kernel_config = config["tables"]
        optimizer = TableOptimizer(**kernel_config["optimizer"])
        tables = cls(schema, kernel_config["num_embeddings"], OptEmbedConfig(**config["config"]), optimizer, device)
        own = ["thresholds"] + ([f"kept/{t}" for t in tables.fields] if config["frozen"] else [])
        missing = [k for k in own if k not in tensors]
        if missing:
            raise ValueError(f"pruned state has no tensor(s) {missing}")
        if tensors["thresholds"].shape != tables.thresholds.shape:
            raise ValueError(f"pruned state: thresholds is {tuple(tensors['thresholds'].shape)}, expected {tuple(tables.thresholds.shape)}")
        kernel_tensors = {k: v for k, v in tensors.items() if k not in own}
        tables.tables.kernel.load_state_tensors(kernel_tensors, source="pruned state")
        with torch.no_grad():
            tables.thresholds.copy_(tensors["thresholds"])
        if config["frozen"]:
            tables._freeze([tensors[f"kept/{t}"] for t in tables.fields], tables._checked_dims(config["dims"]))
        else:
            tables.use_dims(config["dims"])
        return tables
