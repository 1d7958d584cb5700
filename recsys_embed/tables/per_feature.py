"""Per-feature tables: one embedding table per table group, trained by fbgemm's fused kernel."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables.base import Embeddings, EmbeddingShapes, FusedTables, TableOptimizer, check_ids, sequence_slots


class PerFeatureTables(nn.Module):
    """One table per table group of the schema; features of a group share its rows.

    Input: a ``KeyedJaggedTensor`` with (at least) the schema's sparse features as keys.
    Output: :class:`Embeddings`; categorical feature f gives ``pooled[f]`` of ``[B, D_f]``
    (the sum over its bag, which has one id for categorical features), sequence feature s
    gives ``sequences[s]`` of ``[B, L_s, D_s]`` and ``masks[s]`` of ``[B, L_s]``.

    Example::

        >>> schema = Schema([FeatureSpec("item_id", embedding_dim=4),
        ...                  FeatureSpec("hist", kind="sequence", table="item_id", max_len=3, embedding_dim=4)])
        >>> tables = PerFeatureTables(schema, {"item_id": 10})
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(
        ...     keys=["item_id", "hist"], values=torch.tensor([5, 7, 2, 3, 4]),
        ...     lengths=torch.tensor([1, 1, 3, 0]))
        >>> out = tables(kjt)
        >>> out.pooled["item_id"].shape, out.sequences["hist"].shape, out.masks["hist"].tolist()
        (torch.Size([2, 4]), torch.Size([2, 3, 4]), [[True, True, True], [False, False, False]])
    """

    def __init__(
        self,
        schema: Schema,
        num_embeddings: Mapping[str, int],
        optimizer: TableOptimizer | None = None,
        init_scale: float = 0.05,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.features: list[FeatureSpec] = schema.sparse_features
        self.table_names = list(schema.tables)
        missing = [t for t in self.table_names if t not in num_embeddings]
        if missing:
            raise ValueError(f"num_embeddings has no row count for table(s) {missing}")
        self.rows = {t: int(num_embeddings[t]) for t in self.table_names}
        dims = {t: schema.tables[t][0].embedding_dim for t in self.table_names}
        table_index = {t: i for i, t in enumerate(self.table_names)}
        # the kernel reads slots grouped by table; features keep schema order in the output
        self.slot_order = sorted(self.features, key=lambda f: table_index[f.table])  # type: ignore[index]
        slot_tables: list[int] = []
        self.columns: dict[str, int] = {}  # feature -> first output column
        for spec in self.slot_order:
            slots = spec.max_len if spec.is_sequence else 1
            self.columns[spec.name] = sum(dims[self.table_names[t]] for t in slot_tables)
            slot_tables += [table_index[spec.table]] * slots  # type: ignore[index]
        self.kernel = FusedTables(
            rows=[self.rows[t] for t in self.table_names],
            dims=[dims[t] for t in self.table_names],
            slot_tables=slot_tables,
            optimizer=optimizer or TableOptimizer(),
            init_scale=init_scale,
            device=device,
            table_names=self.table_names,
        )

    def kernel_inputs(self, kjt: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (indices, offsets) the kernel reads for this batch."""
        by_key = kjt.to_dict()
        values, lengths = [], []
        for spec in self.slot_order:
            if spec.name not in by_key:
                raise KeyError(f"batch has no sparse feature {spec.name!r}; it has {kjt.keys()}")
            jt = by_key[spec.name]
            check_ids(spec.name, jt.values(), self.rows[spec.table])  # type: ignore[index]
            if spec.is_sequence:
                v, l = sequence_slots(jt.values(), jt.lengths(), spec.max_len)
            else:
                v, l = jt.values(), jt.lengths()
            values.append(v.to(torch.int64))
            lengths.append(l.to(torch.int64))
        lengths_all = torch.cat(lengths)
        offsets = torch.zeros(lengths_all.numel() + 1, dtype=torch.int64, device=lengths_all.device)
        torch.cumsum(lengths_all, 0, out=offsets[1:])
        return torch.cat(values), offsets

    def forward(self, kjt: KeyedJaggedTensor) -> Embeddings:
        indices, offsets = self.kernel_inputs(kjt)
        flat = self.kernel(indices, offsets)
        batch = flat.shape[0]
        out = Embeddings()
        for spec in self.features:
            dim, col = spec.embedding_dim, self.columns[spec.name]
            if spec.is_sequence:
                out.sequences[spec.name] = flat[:, col : col + spec.max_len * dim].reshape(batch, spec.max_len, dim)
                lengths = kjt[spec.name].lengths().clamp(max=spec.max_len)
                out.masks[spec.name] = torch.arange(spec.max_len, device=flat.device)[None, :] < lengths[:, None]
            else:
                out.pooled[spec.name] = flat[:, col : col + dim]
        return out

    def shapes(self, num_dense: int = 0) -> EmbeddingShapes:
        """The output shapes, for building a model on top of this layout."""
        return EmbeddingShapes(
            pooled={f.name: f.embedding_dim for f in self.features if not f.is_sequence},
            sequences={f.name: (f.max_len, f.embedding_dim) for f in self.features if f.is_sequence},
            num_dense=num_dense,
        )

    def table_weights(self) -> dict[str, torch.Tensor]:
        """Table group -> ``[rows, dim]`` weight view."""
        return dict(zip(self.table_names, self.kernel.weights()))

    def num_parameters(self) -> int:
        return self.kernel.num_parameters()

    def memory_bytes(self) -> int:
        return self.kernel.memory_bytes()

    def summary(self) -> str:
        lines = [f"{'table':<20} {'rows':>10} {'dim':>5} {'bytes':>12}  features"]
        for name, weight in self.table_weights().items():
            feats = [f.name for f in self.features if f.table == name]
            lines.append(f"{name:<20} {weight.shape[0]:>10} {weight.shape[1]:>5} {weight.numel() * 4:>12}  {', '.join(feats)}")
        lines.append(f"total parameters {self.num_parameters():,}  memory {self.memory_bytes():,} bytes (weights + optimizer state)")
        return "\n".join(lines)
