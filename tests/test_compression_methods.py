"""Every built-in compression method behind the compressed layout: shapes and masks, gradients,
determinism under a seed, exact memory accounting, the artifact round trip (optimizer state
included), a small training run that learns, and its docstring examples.

A new method adds its name and a budget config to ``CONFIGS``.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.artifacts import load_artifact, save_artifact
from recsys_embed.compression import CompressedTables, method_class
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables import layout_class

IDS = {"user_id": 300, "item_id": 2000}
DIM = 16
# method -> the item group's config (about 1/10 of the exact table); the user group is hashed
CONFIGS = {
    "exact": {"method": "exact"},
    "hashing": {"method": "hashing", "budget": 0.1},
    "qr": {"method": "qr", "budget": 0.1},
    "qr_add": {"method": "qr", "budget": 0.1, "combine": "add"},
    "qr_concat": {"method": "qr", "budget": 0.1, "combine": "concat"},
    "double_hashing": {"method": "double_hashing", "budget": 0.1},
    "double_hashing_concat": {"method": "double_hashing", "budget": 0.1, "combine": "concat"},
    "adaptive": {"method": "adaptive", "budget": 0.1},
    "adaptive_fraction": {"method": "adaptive", "budget": 0.1, "frequent_fraction": 0.02},
    "mixed_dims": {"method": "mixed_dims", "budget": 0.1},
    "mixed_dims_alpha": {"method": "mixed_dims", "budget": 0.1, "blocks": 3, "alpha": 0.6},
    "multiplexed": {"method": "multiplexed", "budget": 0.1, "probes": 2},
    "robe": {"method": "robe", "budget": 0.1},
    "tt_rec": {"method": "tt_rec", "budget": 0.1},
    "dhe": {"method": "dhe", "budget": 0.1},
    "dpq": {"method": "dpq", "budget": 0.1},
    "dpq_mgqe": {"method": "dpq", "budget": 0.1, "codewords": 32, "tail_codewords": 8, "frequent_fraction": 0.1},
    # int8 codes are 1/4 of the fp32 table (ALPT adds a step per row): the least budget is above 1/4
    "lpt": {"method": "lpt", "budget": 0.3},
    "alpt": {"method": "lpt", "budget": 0.35, "learned_step": True},
    "lpt_int16_sgd": {"method": "lpt", "budget": 0.55, "bits": 16, "optimizer": "sgd"},
    "lr2vq": {"method": "lr2vq", "budget": 0.1},
}
SERVED_BUDGET = {"dpq", "lr2vq"}  # the budget bounds the state served after finalize (training keeps queries / a float latent on top)
MODULES = ["recsys_embed.compression.method", "recsys_embed.compression.registry", "recsys_embed.compression.layout",
           "recsys_embed.compression.qr", "recsys_embed.compression.multiplexed", "recsys_embed.compression.double_hashing",
           "recsys_embed.compression.adaptive", "recsys_embed.compression.mixed_dims", "recsys_embed.compression.robe",
           "recsys_embed.compression.tt_rec", "recsys_embed.compression.dhe", "recsys_embed.compression.dpq",
           "recsys_embed.compression.lpt", "recsys_embed.compression.lr2vq", "recsys_embed.compression.codebooks",
           "recsys_embed.compression.kernels"]


def schema() -> Schema:
    return Schema([
        FeatureSpec("user_id", embedding_dim=DIM),
        FeatureSpec("item_id", embedding_dim=DIM),
        FeatureSpec("hist", kind="sequence", table="item_id", max_len=4, embedding_dim=DIM),
    ])


def build(name: str, seed: int = 0) -> CompressedTables:
    torch.manual_seed(seed)
    compression = {"item_id": CONFIGS[name], "user_id": {"method": "hashing", "budget": 0.5}}
    return CompressedTables.from_options(schema(), IDS, compression)


def batch(seed: int = 1, size: int = 64) -> KeyedJaggedTensor:
    g = torch.Generator().manual_seed(seed)
    users, items = torch.randint(0, IDS["user_id"], (size,), generator=g), torch.randint(0, IDS["item_id"], (size,), generator=g)
    lengths = torch.randint(0, 6, (size,), generator=g)  # empty, short and over-long histories
    hist = torch.randint(0, IDS["item_id"], (int(lengths.sum()),), generator=g)
    return KeyedJaggedTensor.from_lengths_sync(
        ["user_id", "item_id", "hist"], torch.cat([users, items, hist]), torch.cat([torch.ones(2 * size, dtype=torch.int64), lengths])
    )


@pytest.mark.parametrize("name", CONFIGS)
def test_shapes_masks_and_ids(name: str) -> None:
    tables, kjt = build(name), batch()
    out = tables(kjt)
    assert out.pooled["item_id"].shape == (64, DIM) and out.pooled["user_id"].shape == (64, DIM)
    assert out.sequences["hist"].shape == (64, 4, DIM)
    mask = out.masks["hist"]
    assert torch.equal(mask.sum(1), kjt.to_dict()["hist"].lengths().clamp(max=4))
    assert bool((out.sequences["hist"][~mask] == 0).all())
    # a history position holds the same vector as that item's categorical lookup
    vectors = tables.table_vectors("item_id")
    assert vectors.shape == (IDS["item_id"], DIM)
    items = kjt.to_dict()["item_id"].values()
    assert torch.allclose(out.pooled["item_id"], vectors[items], atol=1e-6)
    assert tables.shapes().sequences == {"hist": (4, DIM)}
    with pytest.raises(IndexError, match="item_id"):
        tables(KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id", "hist"], torch.tensor([0, IDS["item_id"]]),
                                                   torch.tensor([1, 1, 0])))


@pytest.mark.parametrize("name", CONFIGS)
def test_gradients_reach_every_kind_of_storage(name: str) -> None:
    tables, kjt = build(name), batch()
    before = {k: v.detach().clone() for k, v in tables.export_state()[0].items() if not k.endswith("step")}
    out = tables(kjt)
    (out.pooled["item_id"].pow(2).sum() + out.sequences["hist"].sum()).backward()
    dense = [p for p in tables.parameters() if p.requires_grad and p not in set(tables.fused_parameters())]
    for p in dense:  # computed storage: the dense optimizer's gradients
        assert p.grad is not None and bool(p.grad.abs().sum() > 0)
    after = tables.export_state()[0]
    stored = [k for k in before if k.startswith("kernel/item_id") and k.endswith(".weight") or k == "method/item_id/codes"]  # lpt: updated in backward
    changed = [k for k in stored if not torch.equal(before[k], after[k])]
    assert changed or dense, "neither the stored rows nor dense parameters received a gradient"


@pytest.mark.parametrize("name", CONFIGS)
def test_same_seed_same_tables(name: str) -> None:
    kjt = batch()
    a, b, c = build(name, seed=3)(kjt), build(name, seed=3)(kjt), build(name, seed=4)(kjt)
    assert torch.equal(a.pooled["item_id"], b.pooled["item_id"]) and torch.equal(a.sequences["hist"], b.sequences["hist"])
    assert not torch.equal(a.pooled["item_id"], c.pooled["item_id"])


@pytest.mark.parametrize("name", CONFIGS)
def test_memory_accounting_is_exact(name: str) -> None:
    tables = build(name)
    method = tables.methods["item_id"]
    kernel_rows = sum(r * d for r, d in method.kernel_tables())
    if CONFIGS[name]["method"] == "lpt":  # integer codes in fp32 weights' worth and the steps (optimizer state is no weight)
        own = -(-method.codes.numel() * method.codes.element_size() // 4) + (IDS["item_id"] if method.learned_step else 1)
    else:
        own = sum(t.numel() for t in [*method.parameters(), *method.buffers()] if t.is_floating_point())
    assert tables.group_parameters("item_id") == kernel_rows + own
    exact = IDS["item_id"] * DIM
    if name != "exact":  # within the budget (1/10 of the exact table for most), what is served for dpq and lr2vq
        budgeted = build(name).serving_layout() if CONFIGS[name]["method"] in SERVED_BUDGET else tables
        assert budgeted.group_parameters("item_id") <= int(exact * CONFIGS[name]["budget"])
    # bytes: fp32 kernel rows + rowwise Adagrad's one fp32 per row + fbgemm's 72 bytes of placeholders,
    # and the methods' own tensors (parameters with two Adam moments, buffers)
    kernel = [t for m in tables.methods.values() for t in m.kernel_tables()]
    allocated = 4 * sum(r * d for r, d in kernel) + 4 * sum(r for r, _ in kernel) + 72
    dense = sum(p.numel() * p.element_size() * 3 for m in tables.methods.values() for p in m.parameters())
    buffers = sum(b.numel() * b.element_size() for m in tables.methods.values() for b in m.buffers())
    assert tables.memory_bytes() == allocated + dense + buffers
    lines = tables.summary().splitlines()
    item = next(line for line in lines if line.startswith("item_id"))
    assert CONFIGS[name]["method"] in item and f"{tables.group_bytes('item_id'):,}" in item
    assert f"{exact / tables.group_parameters('item_id'):.1f}x" in item
    stored = tables.group_bytes("item_id")
    words = item.split()
    at = words.index(f"{stored:,}")  # then bytes per id and bits per value
    assert words[at + 1 : at + 3] == [f"{stored / IDS['item_id']:.1f}", f"{8 * stored / exact:.2f}"], item


@pytest.mark.parametrize("name", CONFIGS)
def test_artifact_round_trip_keeps_outputs_and_optimizer_state(name: str, tmp_path: Path) -> None:
    tables, kjt = build(name), batch()
    tables(kjt).pooled["item_id"].sum().backward()  # optimizer state is non-trivial now
    tensors, config = tables.export_state()
    save_artifact(tmp_path / "t", tensors, {"layout": config})
    tensors, manifest = load_artifact(tmp_path / "t")
    again = layout_class(manifest["layout"]["layout"]).from_state(schema(), tensors, manifest["layout"])
    with torch.no_grad():
        a, b = tables(kjt), again(kjt)
    assert torch.equal(a.pooled["item_id"], b.pooled["item_id"]) and torch.equal(a.sequences["hist"], b.sequences["hist"])
    # one more identical step from both gives identical tables (fused optimizer state restored)
    for layout in (tables, again):
        layout(batch(seed=2)).pooled["item_id"].sum().backward()
    assert torch.equal(tables.table_vectors("item_id"), again.table_vectors("item_id"))


@pytest.mark.parametrize("name", CONFIGS)
def test_small_training_run_learns(name: str) -> None:
    """Per-item click labels, 1/10 of the table's memory: the training loss falls clearly."""
    torch.manual_seed(0)
    tables = build(name)
    head = torch.nn.Linear(DIM, 1)
    dense = [p for p in tables.parameters() if p not in set(tables.fused_parameters())]
    opt = torch.optim.Adam([*head.parameters(), *dense], lr=0.01)
    g = torch.Generator().manual_seed(5)
    popular = torch.randint(0, IDS["item_id"], (200,), generator=g)  # the ids the data uses
    label_of = (torch.rand(IDS["item_id"], generator=g) < 0.5).float()
    losses = []
    for step in range(150):
        items = popular[torch.randint(0, 200, (256,), generator=g)]
        kjt = KeyedJaggedTensor.from_lengths_sync(
            ["user_id", "item_id", "hist"], torch.cat([torch.zeros_like(items), items]),
            torch.cat([torch.ones(512, dtype=torch.int64), torch.zeros(256, dtype=torch.int64)]),
        )
        logit = head(tables(kjt).pooled["item_id"]).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, label_of[items])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.75 * first, (first, last)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_every_built_in_method_is_tested() -> None:
    built_in = {n for n in CONFIGS.values() for n in [n["method"]]}
    from recsys_embed.compression.registry import _METHODS

    assert {n for n, c in _METHODS.items() if c.__module__.startswith("recsys_embed.")} <= built_in
    assert method_class("qr").method_name == "qr"


def test_matryoshka_wraps_compressed_tables_where_prefixes_stay_meaningful() -> None:
    from recsys_embed.tables import MatryoshkaTables

    nested = MatryoshkaTables(build("qr"), prefixes=[4, 8, 16])
    views = nested.training_views(nested(batch()))
    assert [int((v.pooled["item_id"] != 0).sum(1).max()) for v in views] == [4, 8, 16]
    assert nested.at_dim(8)(batch()).pooled["item_id"].shape == (64, 8)
    MatryoshkaTables(build("qr_concat"), prefixes=[12, 16])  # past the quotient half
    with pytest.raises(ValueError, match=r"prefix of 8 columns does not embed ids on its own for table group\(s\) \['item_id \(qr\)'\]"):
        MatryoshkaTables(build("qr_concat"), prefixes=[8, 16])


def test_multiplexed_groups_share_one_pool() -> None:
    pool = {"method": "multiplexed", "rows": 500, "probes": 2, "shared": "pool"}
    torch.manual_seed(0)
    tables = CompressedTables.from_options(schema(), IDS, {"user_id": pool, "item_id": pool})
    assert tables.kernel.rows == [500] and tables.num_parameters() == 500 * 8
    assert tables.group_parameters("user_id") == 500 * 8 and tables.group_parameters("item_id") == 0
    assert "(tables shared with user_id)" in tables.summary()
    same_id = KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id", "hist"], torch.tensor([7, 7, 7]), torch.tensor([1, 1, 1]))
    out = tables(same_id)
    assert not torch.equal(out.pooled["user_id"], out.pooled["item_id"])  # per-group seeds
    assert torch.equal(out.pooled["item_id"], out.sequences["hist"][:, 0])
    weights = tables.kernel.weights()[0]
    rows = tables.methods["user_id"].kernel_rows(torch.tensor([7]))[:, 0]
    assert torch.equal(out.pooled["user_id"][0], torch.cat([weights[rows[0]], weights[rows[1]]]))
    with pytest.raises(ValueError, match=r"table groups 'user_id' and 'item_id' share kernel tables 'multiplexed/pool' but give different sizes"):
        CompressedTables.from_options(schema(), IDS, {"user_id": pool, "item_id": {**pool, "rows": 400}})
