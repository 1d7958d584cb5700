"""Per-feature tables against nn.EmbeddingBag: forward, one fused SGD step, shared groups,
sequences, bad ids and accounting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables.base import TableOptimizer, kjt_from_ids
from recsys_embed.tables.per_feature import PerFeatureTables

PAD = -1
SCHEMA = Schema([
    FeatureSpec("user", embedding_dim=8),
    FeatureSpec("item", embedding_dim=4),
    FeatureSpec("query_item", table="item", embedding_dim=4),
    FeatureSpec("hist", kind="sequence", table="item", max_len=3, embedding_dim=4),
    FeatureSpec("city", embedding_dim=8),  # packed with user (same dim) into one fbgemm table
])
ROWS = {"user": 50, "item": 30, "city": 12}


def batch() -> dict[str, torch.Tensor]:
    """4 rows; -1 is padding: an empty user bag, a 2-id user bag, sequences longer than max_len."""
    return {
        "user": torch.tensor([[3, PAD], [7, 9], [PAD, PAD], [49, PAD]]),
        "item": torch.tensor([[2, PAD], [5, PAD], [5, PAD], [29, PAD]]),
        "query_item": torch.tensor([[5, PAD], [2, PAD], [0, PAD], [1, PAD]]),
        "hist": torch.tensor([[4, 5, 6, 7, 8], [9, PAD, PAD, PAD, PAD], [PAD] * 5, [1, 2, 3, PAD, PAD]]),
        "city": torch.tensor([[0, PAD], [11, PAD], [11, PAD], [3, PAD]]),
    }


def reference_bags(tables: PerFeatureTables) -> dict[str, nn.EmbeddingBag]:
    """One nn.EmbeddingBag (sum) per table group holding the same weights."""
    bags = {}
    for table, weight in tables.table_weights().items():
        bag = nn.EmbeddingBag(weight.shape[0], weight.shape[1], mode="sum")
        with torch.no_grad():
            bag.weight.copy_(weight)
        bags[table] = bag
    return bags


def reference_pooled(bags: dict[str, nn.EmbeddingBag], ids: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for spec in SCHEMA.sparse_features:
        if spec.is_sequence:
            continue
        rows = ids[spec.name]
        keep = rows != PAD
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), keep.sum(1).cumsum(0)[:-1]])
        out[spec.name] = bags[spec.table](rows[keep], offsets)
    return out


def test_forward_equals_embedding_bag() -> None:
    tables = PerFeatureTables(SCHEMA, ROWS)
    ids = batch()
    out = tables(kjt_from_ids(ids, padding_id=PAD))
    expected = reference_pooled(reference_bags(tables), ids)
    assert list(out.pooled) == ["user", "item", "query_item", "city"]
    assert list(tables.table_weights()) == ["user", "item", "city"]
    for name, value in expected.items():
        torch.testing.assert_close(out.pooled[name], value, rtol=0, atol=1e-6)
    assert torch.equal(out.pooled["user"][2], torch.zeros(8))  # empty bag -> zeros


@pytest.mark.parametrize("optimizer", ["sgd", "rowwise_adagrad"])
def test_one_fused_step_equals_manual_update(optimizer: str) -> None:
    lr, eps = 0.1, 1e-8
    tables = PerFeatureTables(SCHEMA, ROWS, TableOptimizer(optimizer, lr=lr, eps=eps))
    bags = reference_bags(tables)
    ids = batch()
    out = tables(kjt_from_ids(ids, padding_id=PAD))
    grads = {name: torch.randn_like(value) for name, value in out.pooled.items()}
    torch.autograd.backward([out.pooled[n] for n in grads], [grads[n] for n in grads])

    expected = reference_pooled(bags, ids)
    torch.autograd.backward([expected[n] for n in grads], [grads[n] for n in grads])
    with torch.no_grad():
        for table, bag in bags.items():
            grad = bag.weight.grad
            if optimizer == "sgd":
                bag.weight -= lr * grad
            else:  # rowwise Adagrad from a zero state: one accumulator per row, the mean squared gradient
                bag.weight -= lr * grad / (grad.pow(2).mean(1, keepdim=True).sqrt() + eps)
            # item rows 2 and 5 are read by two features in one batch: their gradients add up
            torch.testing.assert_close(tables.table_weights()[table], bag.weight, rtol=0, atol=1e-6)
    assert bags["item"].weight.grad[5].abs().sum() > 0


def test_shared_group_reads_the_same_rows_and_sequences_keep_the_last_ids() -> None:
    tables = PerFeatureTables(SCHEMA, ROWS)
    out = tables(kjt_from_ids(batch(), padding_id=PAD))
    item = tables.table_weights()["item"]
    seq, mask = out.sequences["hist"], out.masks["hist"]
    assert seq.shape == (4, 3, 4) and mask.dtype == torch.bool
    assert mask.tolist() == [[True] * 3, [True, False, False], [False] * 3, [True] * 3]
    torch.testing.assert_close(seq[0], item[[6, 7, 8]])  # the 3 most recent of 4 5 6 7 8, oldest first
    torch.testing.assert_close(seq[3], item[[1, 2, 3]])
    torch.testing.assert_close(seq[1, 0], item[9])
    assert torch.equal(seq[1, 1:], torch.zeros(2, 4)) and torch.equal(seq[2], torch.zeros(3, 4))
    torch.testing.assert_close(out.pooled["item"][1], out.pooled["query_item"][0])  # both id 5


@pytest.mark.parametrize(
    ("feature", "bad", "message"),
    [("user", 50, r"\[0, 50\).*max 50"), ("item", -2, "min -2"), ("hist", 30, r"'hist'.*\[0, 30\)")],
)
def test_ids_outside_the_table_raise_before_the_kernel_reads(feature: str, bad: int, message: str) -> None:
    tables = PerFeatureTables(SCHEMA, ROWS)
    ids = batch()
    ids[feature][0, 0] = bad
    with pytest.raises(IndexError, match=message):
        tables(kjt_from_ids(ids, padding_id=PAD))


def test_missing_feature_is_a_key_error() -> None:
    tables = PerFeatureTables(SCHEMA, ROWS)
    ids = batch()
    del ids["query_item"]
    with pytest.raises(KeyError, match="query_item"):
        tables(kjt_from_ids(ids, padding_id=PAD))


@pytest.mark.parametrize(("optimizer", "state_per_row"), [("sgd", 0), ("rowwise_adagrad", 1), ("adagrad", None)])
def test_accounting_counts_weights_and_optimizer_state(optimizer: str, state_per_row: int | None) -> None:
    tables = PerFeatureTables(SCHEMA, ROWS, TableOptimizer(optimizer))
    assert tables.num_parameters() == 50 * 8 + 30 * 4 + 12 * 8
    weight_bytes = 4 * tables.num_parameters()
    state_bytes = weight_bytes if state_per_row is None else 4 * state_per_row * sum(ROWS.values())
    assert sum(tables.kernel.table_bytes()) == weight_bytes + state_bytes
    # the kernel also keeps a few one-element placeholders for unused states
    assert 0 <= tables.memory_bytes() - (weight_bytes + state_bytes) < 256


def test_summary_lists_every_feature_and_hashed_collision_rates() -> None:
    schema = Schema([FeatureSpec("city", ids="hashing", hash_buckets=100), FeatureSpec("item")])
    tables = PerFeatureTables(schema, {"city": 102, "item": 10})
    text = tables.summary(distinct_values={"city": 100})
    city, item = (line for line in text.splitlines() if line.startswith(("city", "item")))
    assert "102" in city and "per_feature" in city and "0.6303" in city  # 1 - 0.99**99
    assert item.rstrip().endswith("-")
    shared = PerFeatureTables(SCHEMA, ROWS).summary()
    assert "(shared)" in next(line for line in shared.splitlines() if line.startswith("query_item"))


def test_an_empty_batch_gives_empty_outputs() -> None:
    tables = PerFeatureTables(SCHEMA, ROWS)
    empty = {name: ids[:0] for name, ids in batch().items()}
    out = tables(kjt_from_ids(empty, padding_id=PAD))
    assert out.pooled["user"].shape == (0, 8) and out.sequences["hist"].shape == (0, 3, 4) and out.masks["hist"].shape == (0, 3)
