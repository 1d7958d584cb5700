"""Matryoshka tables: prefix training views and prefix exports."""

from __future__ import annotations

import doctest
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables import matryoshka
from recsys_embed.tables.base import TableOptimizer
from recsys_embed.tables.matryoshka import MatryoshkaTables
from recsys_embed.tables.per_feature import PerFeatureTables
from recsys_embed.tables.pruned import OptEmbedConfig, PrunedTables

SCHEMA = Schema(
    [
        FeatureSpec("user_id", embedding_dim=12),
        FeatureSpec("item_id", embedding_dim=8),
        FeatureSpec("hist", kind="sequence", table="item_id", max_len=4, embedding_dim=8),
    ]
)
ROWS = {"user_id": 30, "item_id": 40}
PREFIXES = [2, 4, 8]


def batch() -> KeyedJaggedTensor:
    users, items = list(range(30)), [b % 40 for b in range(30)]
    hists = [[(b + k) % 40 for k in range(b % 7)] for b in range(30)]
    values = users + items + [i for h in hists for i in h]
    lengths = [1] * 30 + [1] * 30 + [len(h) for h in hists]
    return KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id", "hist"], torch.tensor(values), torch.tensor(lengths))


def per_feature(lr: float = 0.05) -> PerFeatureTables:
    return PerFeatureTables(SCHEMA, ROWS, TableOptimizer("sgd", lr=lr))


def test_docstring_examples() -> None:
    result = doctest.testmod(matryoshka)
    assert result.attempted > 0 and result.failed == 0


def test_views_zero_exactly_the_tails() -> None:
    tables = MatryoshkaTables(per_feature(), PREFIXES)
    emb = tables(batch())
    views = tables.training_views(emb)
    assert len(views) == len(PREFIXES)
    for prefix, view in zip(PREFIXES, views):
        for full, cut in [(emb.pooled[f], view.pooled[f]) for f in emb.pooled] + [(emb.sequences["hist"], view.sequences["hist"])]:
            assert cut.shape == full.shape
            assert torch.equal(cut[..., :prefix], full[..., :prefix])
            assert (cut[..., prefix:] == 0).all()
        assert torch.equal(view.masks["hist"], emb.masks["hist"])
    assert (emb.pooled["user_id"] != 0).all()  # the full output itself is untouched


def test_summed_view_losses_train_each_prefix_through_the_fused_kernel() -> None:
    base = per_feature(lr=1.0)
    tables = MatryoshkaTables(base, PREFIXES)
    weight = base.table_weights()["user_id"]
    before = weight.clone()
    kjt = KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id", "hist"], torch.tensor([3, 0]), torch.tensor([1, 1, 0]))
    sum(view.pooled["user_id"].sum() for view in tables.training_views(tables(kjt))).backward()
    # column c of the row is in len([p for p in PREFIXES if c < p]) views; SGD lr 1 moves it by minus that
    expected = torch.tensor([-3.0] * 2 + [-2.0] * 2 + [-1.0] * 4 + [0.0] * 4)
    assert torch.allclose(weight[3] - before[3], expected)


def test_exported_prefix_equals_the_truncation() -> None:
    tables = MatryoshkaTables(per_feature(), PREFIXES).eval()
    kjt = batch()
    full = tables(kjt)
    for dim in PREFIXES:
        small = tables.at_dim(dim)
        out = small(kjt)
        for name in full.pooled:
            assert torch.equal(out.pooled[name], full.pooled[name][:, :dim])
        assert torch.equal(out.sequences["hist"], full.sequences["hist"][..., :dim])
        assert torch.equal(out.masks["hist"], full.masks["hist"])
        assert small.memory_bytes() == sum(ROWS.values()) * dim * 4 < tables.memory_bytes()
        assert small.shapes().pooled == {"user_id": dim, "item_id": dim}
        padded = tables.at_dim(dim, keep_width=True)(kjt)
        assert torch.equal(padded.pooled["user_id"], matryoshka.prefix_view(full, dim).pooled["user_id"])


def test_prefix_export_of_pruned_tables_keeps_rows_pruned() -> None:
    base = PrunedTables(SCHEMA, ROWS).eval()
    with torch.no_grad():
        base.thresholds.copy_(torch.tensor([0.28, 0.15]))
    base.use_dims([12, 3])
    tables = MatryoshkaTables(base, PREFIXES)
    kjt = batch()
    full = tables(kjt)
    assert (full.pooled["user_id"] == 0).all(1).any()  # some rows pruned
    small = tables.at_dim(4)
    out = small(kjt)
    assert torch.equal(out.pooled["user_id"], full.pooled["user_id"][:, :4])
    assert torch.equal(out.sequences["hist"], full.sequences["hist"][..., :4])
    assert small.memory_bytes() < base.compact().memory_bytes()


def test_hooks_pass_through_and_state_round_trips(tmp_path) -> None:
    base = PrunedTables(SCHEMA, ROWS, OptEmbedConfig(alpha=0.1, threshold_init=0.05))
    tables = MatryoshkaTables(base, PREFIXES)
    assert torch.equal(tables.regularization_loss(), base.regularization_loss())
    assert tables.dense_parameters()[0]["params"] == [base.thresholds]
    assert MatryoshkaTables(per_feature(), PREFIXES).regularization_loss() is None  # nothing to add
    base.use_dims([5, 7])
    tensors, config = tables.export_state()
    save_file(tensors, tmp_path / "t.safetensors")
    (tmp_path / "t.json").write_text(json.dumps(config))
    loaded = MatryoshkaTables.from_state(SCHEMA, load_file(tmp_path / "t.safetensors"), json.loads((tmp_path / "t.json").read_text()))
    assert loaded.prefixes == PREFIXES and isinstance(loaded.base, PrunedTables) and loaded.base.dims == [5, 7]
    kjt = batch()
    a, b = loaded.eval()(kjt), tables.eval()(kjt)
    for name in a.pooled:
        assert torch.equal(a.pooled[name], b.pooled[name])
    assert torch.equal(a.sequences["hist"], b.sequences["hist"])


def test_state_round_trips_over_per_feature_tables(tmp_path) -> None:
    tables = MatryoshkaTables(per_feature(), PREFIXES)
    kjt = batch()
    sum(v.pooled["user_id"].sum() for v in tables.training_views(tables(kjt))).backward()
    tensors, config = tables.export_state()
    save_file(tensors, tmp_path / "t.safetensors")
    loaded = MatryoshkaTables.from_state(SCHEMA, load_file(tmp_path / "t.safetensors"), json.loads(json.dumps(config)))
    assert isinstance(loaded.base, PerFeatureTables)
    for dim in (4, 8):
        a, b = loaded.at_dim(dim)(kjt), tables.at_dim(dim)(kjt)
        assert all(torch.equal(a.pooled[f], b.pooled[f]) for f in a.pooled)


def test_bad_prefixes_and_states_raise() -> None:
    with pytest.raises(ValueError, match=r"\[1, 8\]"):
        MatryoshkaTables(per_feature(), [4, 16])
    with pytest.raises(ValueError, match="prefix dim"):
        MatryoshkaTables(per_feature(), PREFIXES).at_dim(9)
    with pytest.raises(ValueError, match="'base' must be the wrapped layout's config with its registered name"):
        MatryoshkaTables.from_state(SCHEMA, {}, {"layout": "matryoshka", "base_class": "os:system", "base": {}, "prefixes": [2]})
    with pytest.raises(ValueError, match="unknown table layout 'os'; known: .*'per_feature'"):
        MatryoshkaTables.from_state(SCHEMA, {}, {"layout": "matryoshka", "base": {"layout": "os"}, "prefixes": [2]})


def test_state_written_with_a_base_class_path_still_loads() -> None:
    """Before the layout registry, the manifest named the wrapped class by module path; the
    base config's registered name is what loads it now (the path is never imported)."""
    tables = MatryoshkaTables(per_feature(), PREFIXES)
    tensors, config = tables.export_state()
    assert "base_class" not in config and config["base"]["layout"] == "per_feature"
    old = {**config, "base_class": "recsys_embed.tables.per_feature:PerFeatureTables"}
    loaded = MatryoshkaTables.from_state(SCHEMA, tensors, json.loads(json.dumps(old)))
    assert isinstance(loaded.base, PerFeatureTables)
    kjt = batch()
    assert torch.equal(loaded(kjt).pooled["user_id"], tables(kjt).pooled["user_id"])
