"""Every registered table layout against the contract: shapes, state round trip, accounting, hooks."""

from __future__ import annotations

import doctest
from collections.abc import Callable

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.artifacts import load_artifact, save_artifact
from recsys_embed.compression import CompressedTables, quantize
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables import (
    MatryoshkaTables,
    MultiplexedConfig,
    MultiplexedTables,
    OptEmbedConfig,
    PerFeatureTables,
    PrunedTables,
    TableLayout,
    contract,
    layout_class,
    registered_layouts,
    registry,
)
from recsys_embed.tables.base import FusedTables

SCHEMA = Schema([
    FeatureSpec("user_id", embedding_dim=8),
    FeatureSpec("item_id", embedding_dim=8),
    FeatureSpec("hist", kind="sequence", table="item_id", max_len=3, embedding_dim=8),
])
ROWS = {"user_id": 20, "item_id": 30}
BATCH = 6


def pruned() -> PrunedTables:
    """Pruned tables with some rows below their thresholds and trimmed dims."""
    tables = PrunedTables(SCHEMA, ROWS, OptEmbedConfig(threshold_init=0.2)).eval()
    tables.use_dims([5, 8])
    return tables


FACTORIES: dict[str, Callable[[], TableLayout]] = {
    "per_feature": lambda: PerFeatureTables(SCHEMA, ROWS),
    "multiplexed": lambda: MultiplexedTables(
        SCHEMA, MultiplexedConfig(rows=25, chunk_dim=4, table_probes={"item_id": 2}), vocab_sizes=ROWS
    ),
    "pruned": pruned,
    "compact": lambda: pruned().compact(),
    "matryoshka": lambda: MatryoshkaTables(PerFeatureTables(SCHEMA, ROWS), prefixes=[4, 8]),
    "compressed": lambda: CompressedTables.from_options(
        SCHEMA, ROWS, {"item_id": {"method": "qr", "budget": 0.5}, "user_id": {"method": "hashing", "rows": 7}}
    ),
    "quantized": lambda: quantize(PerFeatureTables(SCHEMA, ROWS), 8),
}
INFERENCE_ONLY = {"quantized"}  # train() raises


def batch() -> KeyedJaggedTensor:
    """Users and items (one id per bag) and histories of 0-5 items (longer than max_len for some)."""
    users = [b % ROWS["user_id"] for b in range(BATCH)]
    items = [(7 * b) % ROWS["item_id"] for b in range(BATCH)]
    hists = [[(b + k) % ROWS["item_id"] for k in range(b)] for b in range(BATCH)]
    values = users + items + [i for h in hists for i in h]
    lengths = [1] * BATCH + [1] * BATCH + [len(h) for h in hists]
    return KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id", "hist"], torch.tensor(values), torch.tensor(lengths))


def outputs(layout: TableLayout, kjt: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
    """Every output tensor of ``layout`` (eval mode, no gradient) by a flat name."""
    layout.eval()
    with torch.no_grad():
        emb = layout(kjt)
    return {
        **{f"pooled.{k}": v for k, v in emb.pooled.items()},
        **{f"sequences.{k}": v for k, v in emb.sequences.items()},
        **{f"masks.{k}": v for k, v in emb.masks.items()},
    }


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_contract_and_registry_doctests() -> None:
    for module in (contract, registry):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_every_built_in_layout_is_registered_and_checked_here() -> None:
    built_in = {name for name in registered_layouts() if layout_class(name).__module__.startswith("recsys_embed.")}
    assert built_in == set(FACTORIES)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_is_the_registered_subclass(name: str) -> None:
    layout = FACTORIES[name]()
    cls = layout_class(name)
    assert issubclass(cls, TableLayout) and type(layout) is cls and cls.layout_name == name
    assert [f.name for f in layout.features] == ["user_id", "item_id", "hist"]


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_forward_shapes_match_shapes(name: str) -> None:
    layout = FACTORIES[name]()
    shapes = layout.shapes(num_dense=3)
    emb = layout.eval()(batch())
    assert shapes.num_dense == 3
    assert {f: tuple(x.shape) for f, x in emb.pooled.items()} == {f: (BATCH, d) for f, d in shapes.pooled.items()}
    assert {f: tuple(x.shape) for f, x in emb.sequences.items()} == {f: (BATCH, L, d) for f, (L, d) in shapes.sequences.items()}
    assert {f: tuple(m.shape) for f, m in emb.masks.items()} == {f: (BATCH, L) for f, (L, _) in shapes.sequences.items()}
    assert all(m.dtype == torch.bool for m in emb.masks.values())


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_state_round_trips_through_an_artifact_by_name(name: str, tmp_path) -> None:
    layout = FACTORIES[name]()
    tensors, config = layout.export_state()
    assert config["layout"] == name
    save_artifact(tmp_path / "tables", tensors, {"layout_state": config})
    loaded_tensors, manifest = load_artifact(tmp_path / "tables")
    again = layout_class(manifest["layout_state"]["layout"]).from_state(SCHEMA, loaded_tensors, manifest["layout_state"])
    assert type(again) is type(layout)
    kjt = batch()
    assert_same(outputs(again, kjt), outputs(layout, kjt))
    mine, theirs = layout.export_state()[0], again.export_state()[0]  # both after one forward (fbgemm counts steps)
    assert mine.keys() == theirs.keys() == tensors.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def _distinct_bytes(tensors: list[torch.Tensor]) -> int:
    storages = {(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) for t in tensors if t.numel()}
    return sum(size for _, size in storages)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_accounting_is_what_is_allocated(name: str) -> None:
    layout = FACTORIES[name]()
    if name == "quantized":  # uint8 rows in fbgemm's host buffer, not in parameters: tests/test_compression_quantized.py
        assert layout.memory_bytes() == layout.kernel.tbe.weights_host.numel() > 0
        assert f"{layout.memory_bytes():,}" in layout.summary()
        return
    parameters, buffers = list(layout.parameters()), list(layout.buffers())
    fused_state = sum(
        s.numel() for m in layout.modules() if isinstance(m, FusedTables) for states in m.optimizer_states() for s in states.values()
    )
    # the weights: every parameter, less the optimizer state a fused kernel keeps as parameters
    weights = sum(p.numel() for p in parameters if p.dtype.is_floating_point) - fused_state
    assert layout.num_parameters() == weights
    # memory: at least every parameter (weights, optimizer state), at most all that is allocated
    assert _distinct_bytes(parameters) <= layout.memory_bytes() <= _distinct_bytes(parameters + buffers)
    summary = layout.summary()
    assert isinstance(summary, str)
    assert f"{layout.num_parameters():,}" in summary and f"{layout.memory_bytes():,}" in summary


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_table_vectors_are_the_outputs_of_each_id(name: str) -> None:
    layout = FACTORIES[name]()
    kjt = batch()
    out = outputs(layout, kjt)
    by_key = kjt.to_dict()
    for feature, group in (("user_id", "user_id"), ("item_id", "item_id")):
        with torch.no_grad():
            vectors = layout.table_vectors(group)
        assert vectors.shape == (layout.num_ids(group), out[f"pooled.{feature}"].shape[1])
        assert not vectors.requires_grad
        assert torch.equal(vectors[by_key[feature].values()], out[f"pooled.{feature}"])
    with torch.no_grad():
        items = layout.table_vectors("item_id")
    mask = out["masks.hist"]
    first_ids = [ids[-3:] for ids in by_key["hist"].values().split(by_key["hist"].lengths().tolist())]
    for b, ids in enumerate(first_ids):
        assert torch.equal(out["sequences.hist"][b][mask[b]], items[ids])
    with pytest.raises(ValueError, match="'nothing'"):
        layout.table_vectors("nothing")
    if name in INFERENCE_ONLY:
        return
    layout.train()
    layout.table_vectors("item_id")
    assert layout.training  # the mode is restored


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_compact_and_serving_layouts_give_the_same_outputs(name: str) -> None:
    layout = FACTORIES[name]()
    kjt = batch()
    expected = outputs(layout, kjt)
    for served in (layout.compact(), layout.serving_layout()):
        assert isinstance(served, TableLayout)
        assert_same(outputs(served, kjt), expected)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_training_hooks(name: str) -> None:
    if name in INFERENCE_ONLY:
        with pytest.raises(ValueError, match="inference-only"):
            FACTORIES[name]().train()
        return
    layout = FACTORIES[name]().train()
    emb = layout(batch())
    views = layout.training_views(emb)
    assert views and all(set(v.pooled) == set(emb.pooled) for v in views)
    extra = layout.regularization_loss()
    assert extra is None or extra.shape == ()
    fused = {id(p) for p in layout.fused_parameters()}
    dense = {id(p) for group in layout.dense_parameters() for p in group["params"]}
    assert not fused & dense
    assert fused == {id(p) for m in layout.modules() if isinstance(m, FusedTables) for p in m.parameters()}


@pytest.mark.parametrize("name", ["pruned", "compact"])
def test_layouts_whose_outputs_are_not_rows_refuse_row_reads(name: str) -> None:
    layout = FACTORIES[name]()
    for read in (layout.num_rows, lambda: layout.rows_read(batch())):
        with pytest.raises(ValueError, match=f"outputs of layout '{name}' are not its table rows"):
            read()


def test_only_a_pruned_layout_has_a_search_stage_and_a_smaller_serving_layout() -> None:
    staged = {name for name, make in FACTORIES.items() if make().has_search_stage()}
    assert staged == {"pruned"}
    layout = FACTORIES["pruned"]()
    assert layout.serving_layout().memory_bytes() < layout.memory_bytes()
    with pytest.raises(ValueError, match="layout 'compact' has no search stage"):
        FACTORIES["compact"]().search_stage(lambda: 0.0, None)  # type: ignore[arg-type]


def test_register_layout_refuses_what_is_not_a_layout_and_a_taken_name() -> None:
    with pytest.raises(TypeError, match="is not a TableLayout subclass"):
        registry.register_layout("dict")(dict)  # type: ignore[type-var]

    class Other(PerFeatureTables):
        pass

    with pytest.raises(ValueError, match="layout name 'per_feature' is taken by recsys_embed.tables.per_feature.PerFeatureTables"):
        registry.register_layout("per_feature")(Other)
    assert layout_class("per_feature") is PerFeatureTables
