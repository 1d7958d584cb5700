"""Artifacts on disk and exact table round trips through them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from recsys_embed.artifacts import FORMAT_VERSION, load_artifact, save_artifact
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables.base import TableOptimizer
from recsys_embed.tables.jagged import kjt_from_ids
from recsys_embed.tables.multiplexed import MultiplexedConfig, MultiplexedTables
from recsys_embed.tables.per_feature import PerFeatureTables

SCHEMA = Schema([
    FeatureSpec("user", embedding_dim=8),
    FeatureSpec("item", embedding_dim=8),
    FeatureSpec("hist", kind="sequence", table="item", max_len=4, embedding_dim=8),
])


def ids(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "user": torch.randint(0, 40, (16,), generator=g),
        "item": torch.randint(0, 60, (16,), generator=g),
        "hist": torch.randint(-1, 60, (16, 6), generator=g),  # -1 is padding
    }


def train_step(tables: nn.Module, seed: int) -> None:
    out = tables(kjt_from_ids(ids(seed), padding_id=-1))
    outputs = [*out.pooled.values(), *out.sequences.values()]
    g = torch.Generator().manual_seed(seed + 100)
    torch.autograd.backward(outputs, [torch.randn(o.shape, generator=g) for o in outputs])


def build(layout: str) -> nn.Module:
    optimizer = TableOptimizer("rowwise_adagrad", lr=0.1)
    if layout == "per_feature":
        return PerFeatureTables(SCHEMA, {"user": 40, "item": 60}, optimizer)
    return MultiplexedTables(SCHEMA, MultiplexedConfig(rows=300, chunk_dim=4, probes=2), optimizer, vocab_sizes={"user": 40})


@pytest.mark.parametrize("layout", ["per_feature", "multiplexed"])
def test_table_round_trip_through_an_artifact_is_exact(tmp_path: Path, layout: str) -> None:
    tables = build(layout)
    train_step(tables, seed=0)  # non-trivial optimizer state
    tensors, config = tables.export_state()
    save_artifact(tmp_path / "a", tensors, {"schema": SCHEMA.to_dict(), "layout_state": config})
    loaded, manifest = load_artifact(tmp_path / "a")
    assert manifest["format_version"] == FORMAT_VERSION and manifest["versions"]["torch"] == torch.__version__
    assert set(loaded) == set(tensors) and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    restored = type(tables).from_state(Schema.from_dict(manifest["schema"]), loaded, manifest["layout_state"])

    kjt = kjt_from_ids(ids(1), padding_id=-1)
    a, b = tables(kjt), restored(kjt)
    for name in a.pooled:
        assert torch.equal(a.pooled[name], b.pooled[name])
    assert torch.equal(a.sequences["hist"], b.sequences["hist"]) and torch.equal(a.masks["hist"], b.masks["hist"])
    # training continues identically: the optimizer state came back too
    train_step(tables, seed=2)
    train_step(restored, seed=2)
    for key, value in tables.export_state()[0].items():
        assert torch.equal(restored.export_state()[0][key], value), key
    assert restored.summary() == tables.summary()


def test_from_state_rejects_foreign_tensors_and_configs() -> None:
    tables = build("per_feature")
    tensors, config = tables.export_state()
    with pytest.raises(ValueError, match=r"'item.weight' has shape \(60, 8\), the layout expects \(61, 8\)"):
        PerFeatureTables.from_state(SCHEMA, tensors, {**config, "num_embeddings": {"user": 40, "item": 61}})
    with pytest.raises(ValueError, match=r"missing \['user.momentum1'\]"):
        PerFeatureTables.from_state(SCHEMA, {k: v for k, v in tensors.items() if k != "user.momentum1"}, config)
    with pytest.raises(ValueError, match="not 'multiplexed'"):
        MultiplexedTables.from_state(SCHEMA, tensors, config)


def test_save_replaces_atomically_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "art"
    save_artifact(path, {"w": torch.zeros(2)}, {"note": "first"})
    save_artifact(path, {"v": torch.arange(3)}, {"note": "second"})
    tensors, manifest = load_artifact(path)
    assert list(tensors) == ["v"] and manifest["note"] == "second"
    assert manifest["tensors"] == {"v": {"dtype": "int64", "shape": [3]}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    with pytest.raises(ValueError, match="written by save_artifact"):
        save_artifact(path, {}, {"tensors": {}})
    with pytest.raises(TypeError, match="JSON-serialisable"):
        save_artifact(tmp_path / "bad", {}, {"schema": SCHEMA})
    assert not (tmp_path / "bad").exists()


def edit_manifest(path: Path, **changes: object) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_load_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "art"
    save_artifact(path, {"w": torch.ones(2, 3)}, {})
    edit_manifest(path, tensors={"w": {"dtype": "float32", "shape": [3, 2]}})
    with pytest.raises(ValueError, match=r"tensor 'w' is .*\[2, 3\].* declares .*\[3, 2\]"):
        load_artifact(path)
    edit_manifest(path, tensors={"w": {"dtype": "float32", "shape": [2, 3]}, "b": {"dtype": "float32", "shape": [1]}})
    with pytest.raises(ValueError, match=r"lacks tensors \['b'\]"):
        load_artifact(path)
    edit_manifest(path, format_version=FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match="newer"):
        load_artifact(path)
    (path / "manifest.json").unlink()
    with pytest.raises(ValueError, match="manifest.json is missing"):
        load_artifact(path)


def test_loading_never_unpickles(tmp_path: Path) -> None:
    path = tmp_path / "art"
    save_artifact(path, {"w": torch.ones(2)}, {})
    torch.save({"w": torch.ones(2)}, path / "tensors.safetensors")  # a pickle in disguise
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_artifact(path)
