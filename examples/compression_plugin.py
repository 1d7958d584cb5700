"""A compression method written as a third-party plugin: signed hashing (Weinberger et al. 2009).

Every id of a table group reads one of ``M`` shared rows, with a hashed sign, so colliding ids
cancel out on average instead of adding up:

    vector(i) = s(i) * W[h(i) mod M],     s(i) = +1 or -1 from a second hash,  W: [M, D].

It is a *computed* method (its own ``nn.Parameter``, trained by the dense optimizer): ``lookup``
maps ids ``[N]`` to vectors ``[N, D]``. A package ships it to other users through the
entry-point group ``recsys_embed.compression`` of its metadata::

    [options.entry_points]                       # the plugin package's setup.cfg
    recsys_embed.compression =
        signed_hashing = compression_plugin:SignedHashing

after which a run config names it (``layout: {name: per_feature, compression: {item_id:
{method: signed_hashing, budget: 0.1}}}``), ``recsys-embed compression`` lists it, and saved
models load it by name in any process.

Run: ``python examples/compression_plugin.py``: trains a tiny click model on a signed-hashing
item table at 1/10 of the exact table's memory, then round trips the tables through an artifact.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.artifacts import load_artifact, save_artifact
from recsys_embed.compression import CompressedTables, CompressionMethod, MethodConfigError, register_compression
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.hashing import bucket_torch, seed_of
from recsys_embed.tables import layout_class


@register_compression("signed_hashing")
class SignedHashing(CompressionMethod):
    """``[M, D]`` shared rows read with a hashed sign. Options: ``rows`` (or a budget), ``salt``."""

    description = "signed hashing: M shared rows, a hashed sign per id (example plugin)"

    def __init__(self, num_ids: int, dim: int, rows: int, salt: str = "signed") -> None:
        super().__init__(num_ids, dim)
        self.rows, self.salt = rows, salt
        self.weight = nn.Parameter(torch.empty(rows, dim).uniform_(-0.05, 0.05))

    @classmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> SignedHashing:
        rows = int(options["rows"]) if budget is None else budget // dim
        if rows < 1:
            raise MethodConfigError(f"signed_hashing: needs at least 1 row of {dim} weights, the budget allows {rows}")
        return cls(num_ids, dim, rows, str(options.get("salt", "signed")))

    def state_config(self) -> dict[str, Any]:
        return {"rows": self.rows, "salt": self.salt}

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        row = bucket_torch(ids, seed_of(self.salt), self.rows)
        sign = 1.0 - 2.0 * bucket_torch(ids, seed_of(self.salt + "/sign"), 2).to(self.weight.dtype)
        return self.weight[row] * sign[:, None]


def main() -> None:
    torch.manual_seed(0)
    schema = Schema([FeatureSpec("item_id", embedding_dim=16)])
    tables = CompressedTables.from_options(schema, {"item_id": 5000}, {"item_id": {"method": "signed_hashing", "budget": 0.1}})
    head = nn.Linear(16, 1)
    optimizer = torch.optim.Adam([*head.parameters(), *tables.parameters()], lr=0.01)  # no fused rows here
    clicks = (torch.rand(5000) < 0.3).float()
    for _ in range(200):
        items = torch.randint(0, 500, (256,))  # the 500 most frequent items
        kjt = KeyedJaggedTensor.from_lengths_sync(["item_id"], items, torch.ones(256, dtype=torch.int64))
        loss = nn.functional.binary_cross_entropy_with_logits(head(tables(kjt).pooled["item_id"]).squeeze(1), clicks[items])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(tables.summary())
    guess = -(0.3 * math.log(0.3) + 0.7 * math.log(0.7))  # the loss of always predicting the click rate
    print(f"final training loss {loss.item():.3f} (a constant guess: {guess:.3f})")
    with tempfile.TemporaryDirectory() as tmp:
        tensors, config = tables.export_state()
        save_artifact(f"{tmp}/tables", tensors, {"layout": config})
        tensors, manifest = load_artifact(f"{tmp}/tables")
        again = layout_class(manifest["layout"]["layout"]).from_state(schema, tensors, manifest["layout"])
    same = torch.equal(again(kjt).pooled["item_id"], tables(kjt).pooled["item_id"])
    print(f"artifact round trip: methods {manifest['layout']['methods']}, identical outputs {same}")


if __name__ == "__main__":
    main()
