"""Multiplexed tables: hashed rows, shared groups, probes, one SGD step, collisions, accounting."""

from __future__ import annotations

import pytest
import torch

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.hashing import bucket_torch, seed_of
from recsys_embed.tables.accounting import expected_collision_rate
from recsys_embed.tables.base import TableOptimizer
from recsys_embed.tables.jagged import kjt_from_ids
from recsys_embed.tables.multiplexed import MultiplexedConfig, MultiplexedTables

PAD = -1
SCHEMA = Schema([
    FeatureSpec("user_id"),
    FeatureSpec("item_id"),
    FeatureSpec("hist", kind="sequence", table="item_id", max_len=3),
    FeatureSpec("price", kind="numeric"),
])
CONFIG = MultiplexedConfig(rows=997, chunk_dim=4, probes=1, table_probes={"item_id": 3})


def batch() -> dict[str, torch.Tensor]:
    return {
        "user_id": torch.tensor([[0, PAD], [1, PAD], [2, 3], [PAD, PAD]]),
        "item_id": torch.tensor([[10], [11], [12], [13]]),
        "hist": torch.tensor([[10, 20, 30, 40], [11, PAD, PAD, PAD], [PAD] * 4, [5, 6, 7, PAD]]),
    }


def test_rows_are_bucket_hashes_seeded_per_table_group_and_probe() -> None:
    tables = MultiplexedTables(SCHEMA, CONFIG)
    ids = torch.arange(100)
    rows = tables.rows_for("item_id", ids)
    assert rows.shape == (100, 3)
    for j in range(3):
        assert torch.equal(rows[:, j], bucket_torch(ids, seed_of(f"multiplexed/item_id/{j}"), 997))
    assert torch.equal(tables.rows_for("hist", ids), rows)  # same table group, same rows
    # another group hashes independently: same ids, (almost always) other rows
    assert (tables.rows_for("user_id", ids)[:, 0] == rows[:, 0]).float().mean() < 0.05


def test_output_concatenates_the_probed_rows() -> None:
    tables = MultiplexedTables(SCHEMA, CONFIG)
    ids = batch()
    out = tables(kjt_from_ids(ids, padding_id=PAD))
    weight = tables.table_weights()["shared"]
    assert tables.shapes().pooled == {"user_id": 4, "item_id": 12}
    assert tables.shapes().sequences == {"hist": (3, 12)}

    def vector(feature: str, id_: int) -> torch.Tensor:
        return weight[tables.rows_for(feature, torch.tensor([id_]))[0]].reshape(-1)

    torch.testing.assert_close(out.pooled["item_id"][1], vector("item_id", 11))
    torch.testing.assert_close(out.pooled["user_id"][2], vector("user_id", 2) + vector("user_id", 3))
    assert torch.equal(out.pooled["user_id"][3], torch.zeros(4))  # empty bag
    assert out.masks["hist"].tolist() == [[True] * 3, [True, False, False], [False] * 3, [True] * 3]
    torch.testing.assert_close(out.sequences["hist"][0], torch.stack([vector("hist", i) for i in (20, 30, 40)]))
    torch.testing.assert_close(out.sequences["hist"][1, 0], out.pooled["item_id"][1])  # item 11 in both
    assert torch.equal(out.sequences["hist"][2], torch.zeros(3, 12))


def test_one_fused_sgd_step_updates_exactly_the_probed_rows() -> None:
    lr = 0.5
    tables = MultiplexedTables(SCHEMA, CONFIG, TableOptimizer("sgd", lr=lr))
    before = tables.table_weights()["shared"].clone()
    ids = batch()
    out = tables(kjt_from_ids(ids, padding_id=PAD))
    outputs = [*out.pooled.values(), *out.sequences.values()]
    grads = [torch.randn_like(o) for o in outputs]
    torch.autograd.backward(outputs, grads)

    expected = before.clone()
    for name, grad in zip([*out.pooled, *out.sequences], grads):
        rows = ids[name]
        if name == "hist":  # keep the last max_len ids, left-aligned
            rows = torch.stack([torch.cat([r[r != PAD][-3:], torch.full((3,), PAD)])[:3] for r in rows])
            grad = grad.reshape(-1, grad.shape[-1])
            rows = rows.reshape(-1, 1)
        for slot in range(rows.shape[1]):
            keep = rows[:, slot] != PAD
            probed = tables.rows_for(name, rows[keep, slot])
            chunks = grad[keep].reshape(len(probed), -1, 4)
            for j in range(probed.shape[1]):
                expected.index_add_(0, probed[:, j], -lr * chunks[:, j])
    torch.testing.assert_close(tables.table_weights()["shared"], expected, rtol=0, atol=1e-6)
    assert not torch.equal(expected, before)


def test_probes_of_one_value_land_on_different_rows() -> None:
    rows_total = 100_003
    tables = MultiplexedTables(Schema([FeatureSpec("item_id")]), MultiplexedConfig(rows=rows_total, chunk_dim=4, probes=4))
    rows = tables.rows_for("item_id", torch.arange(20_000))
    pairs_equal = sum((rows[:, a] == rows[:, b]).sum().item() for a in range(4) for b in range(a + 1, 4))
    assert pairs_equal <= 20_000 * 6 / rows_total * 5  # independent hashes: ~1.2 coincidences expected
    assert rows.min() >= 0 and rows.max() < rows_total


@pytest.mark.parametrize(("num_values", "rows"), [(1000, 1000), (5000, 50_000), (3000, 1500)])
def test_expected_collision_rate_matches_a_measured_uniform_stream(num_values: int, rows: int) -> None:
    buckets = bucket_torch(torch.arange(num_values), seed_of("collisions"), rows)
    shared = torch.bincount(buckets, minlength=rows)[buckets] > 1  # value i shares its row
    stream = torch.randint(0, num_values, (200_000,), generator=torch.Generator().manual_seed(0))
    measured = shared[stream].float().mean().item()
    assert measured == pytest.approx(expected_collision_rate(num_values, rows), abs=0.02)


def test_layout_collision_rate_counts_every_value_and_probe_in_the_shared_table() -> None:
    schema = Schema([FeatureSpec("a"), FeatureSpec("b"), FeatureSpec("c", kind="sequence", table="b", max_len=2)])
    config = MultiplexedConfig(rows=8000, chunk_dim=4, probes=1, table_probes={"b": 2})
    tables = MultiplexedTables(schema, config, vocab_sizes={"a": 3000, "b": 2000})
    keys = torch.cat([tables.rows_for("a", torch.arange(3000)).reshape(-1), tables.rows_for("b", torch.arange(2000)).reshape(-1)])
    measured = (torch.bincount(keys, minlength=8000)[keys] > 1).float().mean().item()
    assert tables.collision_rate() == pytest.approx(expected_collision_rate(3000 + 2 * 2000, 8000))
    assert measured == pytest.approx(tables.collision_rate(), abs=0.02)
    assert f"{tables.collision_rate():.4f}" in tables.summary()
    assert MultiplexedTables(schema, config).collision_rate() is None  # vocabulary sizes unknown


def test_bad_ids_and_configs_raise_clear_errors() -> None:
    tables = MultiplexedTables(SCHEMA, CONFIG, vocab_sizes={"item_id": 50})
    ids = batch()
    ids["user_id"][0, 0] = -3
    with pytest.raises(IndexError, match=r"'user_id'.*min -3"):
        tables(kjt_from_ids(ids, padding_id=PAD))
    ids = batch()
    ids["hist"][0, 0] = 50
    with pytest.raises(IndexError, match=r"'hist'.*\[0, 50\)"):
        tables(kjt_from_ids(ids, padding_id=PAD))
    with pytest.raises(ValueError, match="not sparse features"):
        MultiplexedTables(SCHEMA, MultiplexedConfig(rows=10, features=["price"]))
    with pytest.raises(ValueError, match="table_probes"):
        MultiplexedTables(SCHEMA, MultiplexedConfig(rows=10, table_probes={"hist": 2}))
    with pytest.raises(ValueError, match="probes must be >= 1"):
        MultiplexedConfig(rows=10, probes=0)
    with pytest.raises(ValueError, match="multiple of 4"):
        MultiplexedConfig(rows=10, chunk_dim=6)


def test_budget_subset_and_accounting() -> None:
    config = MultiplexedConfig.from_budget(1000 * 8, chunk_dim=8, features=["item_id"])
    tables = MultiplexedTables(SCHEMA, config)  # rowwise Adagrad: one state per row
    assert config.rows == 1000 and tables.num_parameters() == 8000
    assert tables.kernel.table_bytes() == [1000 * 8 * 4 + 1000 * 4]
    assert 0 <= tables.memory_bytes() - tables.kernel.table_bytes()[0] < 256
    out = tables(kjt_from_ids(batch(), padding_id=PAD))  # other features in the batch are ignored
    assert list(out.pooled) == ["item_id"] and not out.sequences
    with pytest.raises(ValueError, match="less than one row"):
        MultiplexedConfig.from_budget(4, chunk_dim=8)


def test_single_id_fast_path_equals_the_general_path() -> None:
    schema = Schema([FeatureSpec("a"), FeatureSpec("b"), FeatureSpec("c", table="a")])
    tables = MultiplexedTables(schema, MultiplexedConfig(rows=501, chunk_dim=4, table_probes={"a": 2}), vocab_sizes={"b": 100})
    ids = {"a": torch.tensor([1, 2, 3]), "b": torch.tensor([4, 99, 0]), "c": torch.tensor([3, 2, 1])}
    fast = tables(kjt_from_ids(ids))  # keys in layout order, one id per bag
    general = tables(kjt_from_ids(dict(reversed(ids.items()))))  # another key order takes the general path
    for name in ids:
        assert torch.equal(fast.pooled[name], general.pooled[name])
    torch.testing.assert_close(fast.pooled["a"][2], fast.pooled["c"][0])
    with pytest.raises(IndexError, match=r"'b'.*\[0, 100\).*max 100"):
        tables(kjt_from_ids({**ids, "b": torch.tensor([4, 100, 0])}))


def test_an_empty_batch_gives_empty_outputs() -> None:
    tables = MultiplexedTables(SCHEMA, CONFIG)
    out = tables(kjt_from_ids({name: ids[:0] for name, ids in batch().items()}, padding_id=PAD))
    assert out.pooled["item_id"].shape == (0, 12) and out.sequences["hist"].shape == (0, 3, 12)
