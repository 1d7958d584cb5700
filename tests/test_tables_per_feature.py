"""Per-feature tables against nn.EmbeddingBag: forward, one fused SGD step, shared groups,
sequences, bad ids and accounting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables.base import FusedTables, TableOptimizer, adjacent_columns
from recsys_embed.tables.jagged import kjt_from_ids
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


def test_single_id_fast_path_equals_the_general_path_forward_and_update() -> None:
    schema = Schema([
        FeatureSpec("a", embedding_dim=8), FeatureSpec("b", embedding_dim=4),
        FeatureSpec("c", embedding_dim=8), FeatureSpec("d", table="a", embedding_dim=8),
    ])
    rows = {"a": 20, "b": 10, "c": 12}  # a and c packed into one fbgemm table, c's ids shifted by 20
    ids = {"a": torch.tensor([1, 19, 3]), "b": torch.tensor([4, 9, 0]), "c": torch.tensor([11, 0, 5]), "d": torch.tensor([3, 2, 1])}
    fast_tables, general_tables = (PerFeatureTables(schema, rows, TableOptimizer("sgd", lr=0.5)) for _ in range(2))
    general_tables.kernel.load_state_tensors(fast_tables.kernel.state_tensors())
    slot_order = ["a", "c", "d", "b"]  # grouped by dim: the batch takes the single-id fast path
    assert fast_tables.kernel_inputs(kjt_from_ids({n: ids[n] for n in slot_order})).indices.tolist() == [
        v for n in slot_order for v in ids[n].tolist()
    ]
    fast = fast_tables(kjt_from_ids({n: ids[n] for n in slot_order}))
    general = general_tables(kjt_from_ids(ids))  # schema order interleaves dims: the general path
    for name in ids:
        assert torch.equal(fast.pooled[name], general.pooled[name])
    torch.testing.assert_close(fast.pooled["c"][0], fast_tables.table_weights()["c"][11])
    grads = {name: torch.randn_like(value) for name, value in fast.pooled.items()}
    for out in (fast, general):
        torch.autograd.backward([out.pooled[n] for n in grads], [grads[n] for n in grads])
    for name, weight in fast_tables.table_weights().items():
        assert torch.equal(weight, general_tables.table_weights()[name])
    with pytest.raises(IndexError, match=r"'c'.*\[0, 12\).*max 12"):
        fast_tables(kjt_from_ids({n: torch.tensor([0, 12, 1]) if n == "c" else ids[n] for n in slot_order}))


def test_gradients_as_adjacent_columns_update_like_separate_gradients() -> None:
    schema = Schema([FeatureSpec("user", embedding_dim=8), FeatureSpec("item", embedding_dim=4), FeatureSpec("query_item", table="item", embedding_dim=4)])
    ids = {"user": torch.tensor([3, 7, 49, 0]), "item": torch.tensor([2, 5, 5, 29]), "query_item": torch.tensor([5, 2, 0, 5])}
    updated = []
    for adjacent in (True, False):
        torch.manual_seed(0)
        tables = PerFeatureTables(schema, {"user": 50, "item": 30}, TableOptimizer("rowwise_adagrad", lr=0.1))
        initial = tables.table_weights()["item"][5].clone()
        parts = list(tables(kjt_from_ids(ids)).pooled.values())
        flat = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
        grads = list(flat.split([8, 4, 4], dim=1))  # what the backward of torch.cat(parts, 1) hands over
        if not adjacent:
            grads = [g.clone() for g in grads]
        assert (adjacent_columns(grads) is not None) == adjacent
        torch.autograd.backward(parts, grads)
        updated.append({t: w.clone() for t, w in tables.table_weights().items()})
        assert not torch.equal(updated[-1]["item"][5], initial)
    for table in updated[0]:
        assert torch.equal(updated[0][table], updated[1][table])


def test_adjacent_columns_recognises_only_consecutive_blocks_in_order() -> None:
    base = torch.randn(5, 12)
    blocks = list(base.split([4, 8], dim=1))
    assert torch.equal(adjacent_columns(blocks), base) and adjacent_columns(blocks).data_ptr() == base.data_ptr()
    wide = torch.randn(5, 20)
    assert torch.equal(adjacent_columns(list(wide[:, 4:16].split([4, 8], dim=1))), wide[:, 4:16])
    assert adjacent_columns(blocks[::-1]) is None
    assert adjacent_columns([blocks[0], blocks[1].clone()]) is None
    assert adjacent_columns([base[:, :4], base[:, 6:]]) is None  # a gap


def test_fused_tables_check_each_id_against_its_own_packed_table() -> None:
    kernel = FusedTables(rows=[5, 7], dims=[4, 4], slot_tables=[0, 1, 0], optimizer=TableOptimizer("sgd"), table_names=["x", "y"])
    offsets = torch.arange(7)
    ok = torch.tensor([0, 4, 6, 0, 4, 1])
    assert kernel(ok, offsets).shape == (2, 12)
    torch.testing.assert_close(kernel(ok, offsets)[1, 4:8], kernel.weights()[1][0])
    with pytest.raises(IndexError, match=r"'x' \(slot 2\).*\[0, 5\).*got 5"):
        kernel(torch.tensor([0, 4, 6, 0, 5, 1]), offsets)  # row 5 of the packed table is y's row 0
    with pytest.raises(IndexError, match=r"'y'.*got -1"):
        kernel(torch.tensor([0, 4, -1, 0, 4, 1]), offsets)
    with pytest.raises(ValueError, match="offsets must rise"):
        kernel(ok, torch.tensor([0, 1, 2, 3, 4, 5, 9]))
    with pytest.raises(ValueError, match="S \\* B \\+ 1"):
        kernel(ok, torch.arange(6))
    with pytest.raises(ValueError, match="group the slots by dim"):
        FusedTables(rows=[5, 7], dims=[4, 8], slot_tables=[0, 1, 0], optimizer=TableOptimizer("sgd"))


def _pooled_and_positional() -> tuple[PerFeatureTables, PerFeatureTables]:
    torch.manual_seed(11)
    positional = PerFeatureTables(SCHEMA, ROWS, TableOptimizer("rowwise_adagrad", lr=0.1))
    pooled = PerFeatureTables(SCHEMA, ROWS, TableOptimizer("rowwise_adagrad", lr=0.1), pool_sequences=True)
    pooled.kernel.load_state_tensors(positional.kernel.state_tensors())
    return pooled, positional


def test_pooled_sequences_are_the_masked_mean_of_the_positions() -> None:
    pooled, positional = _pooled_and_positional()
    kjt = kjt_from_ids(batch(), padding_id=PAD)
    out, reference = pooled(kjt), positional(kjt)
    assert pooled.shapes().pooled == {"user": 8, "item": 4, "query_item": 4, "hist": 4, "city": 8}
    assert not pooled.shapes().sequences
    assert list(out.pooled) == ["user", "item", "query_item", "hist", "city"] and not out.sequences and not out.masks
    mask = reference.masks["hist"]  # the last 3 ids of a longer history, zeros for an empty one
    mean = (reference.sequences["hist"] * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    torch.testing.assert_close(out.pooled["hist"], mean, rtol=0, atol=1e-6)
    assert torch.equal(out.pooled["hist"][2], torch.zeros(4))
    for name in ("user", "item", "query_item", "city"):
        assert torch.equal(out.pooled[name], reference.pooled[name])


def test_pooled_sequences_train_the_same_rows_as_positions() -> None:
    pooled, positional = _pooled_and_positional()
    kjt = kjt_from_ids(batch(), padding_id=PAD)
    torch.manual_seed(12)
    grad = torch.randn(4, 4)
    pooled(kjt).pooled["hist"].backward(grad)
    reference = positional(kjt)
    mask = reference.masks["hist"].unsqueeze(-1)
    ((reference.sequences["hist"] * mask).sum(1) / mask.sum(1).clamp(min=1)).backward(grad)
    for table, weight in positional.table_weights().items():
        torch.testing.assert_close(pooled.table_weights()[table], weight, rtol=0, atol=1e-6)


def test_pooled_sequences_survive_the_state_round_trip_and_refuse_sharding() -> None:
    from recsys_embed.jobs.sharding import slot_features

    pooled, _ = _pooled_and_positional()
    tensors, config = pooled.export_state()
    assert config["pool_sequences"] is True
    again = PerFeatureTables.from_state(SCHEMA, tensors, config)
    kjt = kjt_from_ids(batch(), padding_id=PAD)
    assert again.pool_sequences and torch.equal(again(kjt).pooled["hist"], pooled(kjt).pooled["hist"])
    empty = pooled(kjt_from_ids({name: ids[:0] for name, ids in batch().items()}, padding_id=PAD))
    assert empty.pooled["hist"].shape == (0, 4) and not empty.sequences
    with pytest.raises(ValueError, match="pool_sequences=True is not sharded"):
        slot_features(pooled)


def test_a_batch_is_walked_once_for_forward_and_the_rows_it_read() -> None:
    """forward, rows_read (mini-batch aware L2) and kernel_inputs (sharding, pruning) of one batch
    share one walk of its KeyedJaggedTensor; the next batch gets its own."""
    tables = PerFeatureTables(SCHEMA, ROWS)
    kjt = kjt_from_ids({**batch(), "user": torch.tensor([[3], [7], [PAD], [49]])}, padding_id=PAD)  # one id per bag
    inputs = tables.kernel_inputs(kjt)
    out = tables(kjt)
    rows = tables.rows_read(kjt)
    assert tables.kernel_inputs(kjt) is inputs
    assert torch.equal(rows["hist"].squeeze(-1) >= 0, out.masks["hist"])
    hist = rows["hist"].squeeze(-1)  # layout rows: item's rows come after user's 50
    item_rows = tables.table_weights()["item"][hist[hist >= 0] - ROWS["user"]]
    torch.testing.assert_close(out.sequences["hist"][hist >= 0], item_rows, rtol=0, atol=0)
    assert tables.kernel_inputs(kjt_from_ids(batch(), padding_id=PAD)) is not inputs
