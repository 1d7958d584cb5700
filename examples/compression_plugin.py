"""A compression method written as a third-party plugin: row-wise int8 tables.

Each table group's rows are stored as int8 with one float32 scale per row,

    s[r] = max_c |w[r, c]| / 127,   q[r] = round(w[r] / s[r]),   vector(r) = s[r] * q[r],

so a row of D floats takes D + 4 bytes instead of 4 D, and every entry is off by at most
``s[r] / 2``. The class implements the table-layout contract (``recsys_embed.tables.TableLayout``)
and registers itself as compression method ``int8_rows`` when imported; a package ships it to
other users through the entry-point group ``recsys_embed.compression`` of its metadata::

    [options.entry_points]                       # the plugin package's setup.cfg
    recsys_embed.compression =
        int8_rows = compression_plugin:Int8RowTables

after which ``layout_class("int8_rows")`` (artifacts, Matryoshka) finds it without an import.

Run: ``python examples/compression_plugin.py [OUT_DIR]``: quantizes a trained-size per-feature
table, compares the outputs and the memory, and round trips the state through an artifact.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from typing import Any

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.artifacts import load_artifact, save_artifact
from recsys_embed.compression import register_compression
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables import Embeddings, EmbeddingShapes, PerFeatureTables, TableLayout, layout_class
from recsys_embed.tables.base import check_layout
from recsys_embed.tables.contract import group_size
from recsys_embed.tables.inputs import batch_inputs


@register_compression("int8_rows")
class Int8RowTables(TableLayout):
    """Row-wise int8 tables for the sparse features of ``schema``; ``weights``: table group -> ``[rows, D]`` floats.

    Output: :class:`Embeddings` as the layout the weights came from gives them in eval mode,
    within ``s[r] / 2`` per entry (categorical bags hold at most one id).
    """

    def __init__(self, schema: Schema, weights: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.schema = schema
        self.features = schema.sparse_features
        self.groups = list(schema.tables)
        self.rows = {g: int(weights[g].shape[0]) for g in self.groups}
        for i, group in enumerate(self.groups):
            w = weights[group].detach().float()
            scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
            self.register_buffer(f"q_{i}", torch.round(w / scale[:, None]).to(torch.int8))
            self.register_buffer(f"scale_{i}", scale)

    @classmethod
    def quantize(cls, layout: TableLayout, schema: Schema) -> Int8RowTables:
        """The int8 copy of ``layout``'s vectors (its :meth:`~TableLayout.table_vectors`)."""
        return cls(schema, {g: layout.table_vectors(g) for g in schema.tables})

    def _table(self, group: str) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.groups.index(group)
        return getattr(self, f"q_{i}"), getattr(self, f"scale_{i}")

    def forward(self, kjt: KeyedJaggedTensor) -> Embeddings:
        inputs = batch_inputs(kjt, self.features, self.rows)
        out = Embeddings()
        for spec in self.features:
            q, scale = self._table(spec.table)  # type: ignore[arg-type]
            ids = inputs.slot_rows(spec.name).squeeze(-1)  # [B] or [B, L], -1 where empty
            at = ids.clamp(min=0)
            vectors = q[at].float() * (scale[at] * (ids >= 0)).unsqueeze(-1)
            if spec.is_sequence:
                out.sequences[spec.name], out.masks[spec.name] = vectors, ids >= 0
            else:
                out.pooled[spec.name] = vectors
        return out

    def shapes(self, num_dense: int = 0) -> EmbeddingShapes:
        return EmbeddingShapes(
            pooled={f.name: f.embedding_dim for f in self.features if not f.is_sequence},
            sequences={f.name: (f.max_len, f.embedding_dim) for f in self.features if f.is_sequence},  # type: ignore[misc]
            num_dense=num_dense,
        )

    def num_ids(self, group: str) -> int:
        return group_size(self.rows, group, self.layout_name)

    def num_parameters(self) -> int:
        return sum(b.numel() for b in self.buffers())

    def memory_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def summary(self) -> str:
        lines = [f"{g}: {self.rows[g]} rows x {self._table(g)[0].shape[1]} int8 + 1 float32 scale" for g in self.groups]
        return "\n".join([*lines, f"total parameters {self.num_parameters():,}  memory {self.memory_bytes():,} bytes"])

    def export_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {}
        for group in self.groups:
            q, scale = self._table(group)
            tensors[f"q/{group}"], tensors[f"scale/{group}"] = q.cpu().clone(), scale.cpu().clone()
        return tensors, {"layout": self.layout_name}

    @classmethod
    def from_state(
        cls, schema: Schema, tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any], device: torch.device | str | None = None
    ) -> Int8RowTables:
        check_layout(config, cls.layout_name)
        missing = [f"{kind}/{g}" for g in schema.tables for kind in ("q", "scale") if f"{kind}/{g}" not in tensors]
        if missing:
            raise ValueError(f"{cls.layout_name} state has no tensor(s) {missing}")
        tables = cls(schema, {g: torch.zeros(tensors[f"q/{g}"].shape) for g in schema.tables})
        with torch.no_grad():
            for group in tables.groups:
                q, scale = tables._table(group)
                q.copy_(tensors[f"q/{group}"])
                scale.copy_(tensors[f"scale/{group}"])
        return tables.to(device or "cpu")


def main(out_dir: str) -> None:
    torch.manual_seed(0)
    schema = Schema([
        FeatureSpec("user_id", embedding_dim=16),
        FeatureSpec("item_id", embedding_dim=16),
        FeatureSpec("hist_item_id", kind="sequence", table="item_id", max_len=5, embedding_dim=16),
    ])
    full = PerFeatureTables(schema, {"user_id": 1000, "item_id": 5000}).eval()
    small = Int8RowTables.quantize(full, schema)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["user_id", "item_id", "hist_item_id"],
        torch.cat([torch.randint(0, 1000, (64,)), torch.randint(0, 5000, (64 + 200,))]),  # users, items, histories
        torch.tensor([1] * 128 + [4] * 50 + [0] * 14),
    )
    with torch.no_grad():
        a, b = full(kjt), small(kjt)
    error = max(float((a.pooled[f] - b.pooled[f]).abs().max()) for f in a.pooled)
    error = max(error, float((a.sequences["hist_item_id"] - b.sequences["hist_item_id"]).abs().max()))
    print(f"int8_rows: memory {full.memory_bytes():,} -> {small.memory_bytes():,} bytes, largest output error {error:.5f}")
    tensors, config = small.export_state()
    save_artifact(f"{out_dir}/int8", tensors, {"layout": config})
    tensors, manifest = load_artifact(f"{out_dir}/int8")
    again = layout_class(manifest["layout"]["layout"]).from_state(schema, tensors, manifest["layout"])
    same = all(torch.equal(again(kjt).pooled[f], b.pooled[f]) for f in b.pooled)
    print(f"artifact round trip through layout_class({config['layout']!r}): identical outputs {same}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
