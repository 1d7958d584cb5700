"""Mini-batch aware L2: unique rows once, scaled by inverse frequency, through fused tables; the
rows a batch reads and their frequencies over a dataset, for every layout that outputs its rows."""

import doctest

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.models import mini_batch_aware_l2
from recsys_embed.tables import MatryoshkaTables, MultiplexedConfig, MultiplexedTables, PrunedTables, frequencies
from recsys_embed.tables.base import TableOptimizer
from recsys_embed.tables.frequencies import row_frequencies, row_vectors
from recsys_embed.tables.per_feature import PerFeatureTables


def test_each_unique_row_counts_once_scaled_by_inverse_frequency() -> None:
    rows = torch.tensor([[1.0, 2.0], [0.0, 3.0], [1.0, 2.0], [1.0, 2.0], [2.0, 0.0]])
    ids = torch.tensor([4, 9, 4, 4, 1])
    assert mini_batch_aware_l2(rows, ids).item() == pytest.approx(5 + 9 + 4)
    frequency = torch.tensor([5.0, 3.0, 5.0, 5.0, 2.0])
    assert mini_batch_aware_l2(rows, ids, frequency).item() == pytest.approx(5 / 5 + 9 / 3 + 4 / 2)
    assert mini_batch_aware_l2(rows[:0], ids[:0]).item() == 0.0


def test_gradient_reaches_one_occurrence_per_row() -> None:
    rows = torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 0.0]], requires_grad=True)
    mini_batch_aware_l2(rows, torch.tensor([5, 5, 2]), torch.tensor([2.0, 2.0, 1.0])).backward()
    assert rows.grad.tolist() == [[1.0, 2.0], [0.0, 0.0], [6.0, 0.0]]


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="embeddings \\[N, D\\] and ids \\[N\\]"):
        mini_batch_aware_l2(torch.ones(3, 2), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="frequency must be \\[N\\]"):
        mini_batch_aware_l2(torch.ones(2, 2), torch.tensor([1, 2]), torch.ones(3))
    with pytest.raises(ValueError, match="frequency must be > 0"):
        mini_batch_aware_l2(torch.ones(2, 2), torch.tensor([1, 2]), torch.tensor([1.0, 0.0]))


def test_penalty_shrinks_only_the_touched_rows_of_a_fused_table() -> None:
    """Through fbgemm's fused SGD: row j becomes w_j * (1 - 2 lr / n_j), untouched rows stay."""
    torch.manual_seed(0)
    schema = Schema(features=[FeatureSpec("item_id", embedding_dim=4)])
    lr = 0.1
    tables = PerFeatureTables(schema, {"item_id": 8}, TableOptimizer("sgd", lr=lr))
    before = tables.table_weights()["item_id"].clone()
    ids = torch.tensor([3, 5, 3, 3])
    frequency = torch.tensor([4.0, 2.0, 4.0, 4.0])  # training-set counts of ids 3 and 5
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["item_id"], values=ids, lengths=torch.ones(4, dtype=torch.int64))
    mini_batch_aware_l2(tables(kjt).pooled["item_id"], ids, frequency).backward()
    after = tables.table_weights()["item_id"]
    torch.testing.assert_close(after[3], before[3] * (1 - 2 * lr / 4))
    torch.testing.assert_close(after[5], before[5] * (1 - 2 * lr / 2))
    untouched = [0, 1, 2, 4, 6, 7]
    torch.testing.assert_close(after[untouched], before[untouched])


def _kjt(schema: Schema) -> KeyedJaggedTensor:
    """Four samples: one id per categorical bag (one bag empty), histories of 0-5 ids (max_len 3)."""
    values = {"user": [2, 3, 4], "item": [5, 6, 5, 9], "hist": [5, 7, 8, 2, 3, 1, 9, 9, 6]}
    lengths = {"user": [1, 1, 1, 0], "item": [1, 1, 1, 1], "hist": [5, 0, 1, 3]}
    names = [f.name for f in schema.sparse_features]
    return KeyedJaggedTensor.from_lengths_sync(
        names, torch.tensor([v for n in names for v in values[n]]), torch.tensor([n for k in names for n in lengths[k]])
    )


SCHEMA = Schema(features=[
    FeatureSpec("user", embedding_dim=4),
    FeatureSpec("item", embedding_dim=8),
    FeatureSpec("hist", kind="sequence", table="item", max_len=3, embedding_dim=8),
])


@pytest.mark.parametrize("layout", ["per_feature", "multiplexed", "matryoshka"])
def test_row_vectors_are_the_rows_the_lookups_name(layout: str) -> None:
    """Every vector ``row_vectors`` cuts from the layout's output equals the weight row it names
    (pooled, sequence positions, probes side by side); empty bags and padding read nothing."""
    torch.manual_seed(0)
    if layout == "multiplexed":
        tables = MultiplexedTables(SCHEMA, MultiplexedConfig(rows=50, chunk_dim=4, probes=1, table_probes={"item": 2}))
        weights = {4: tables.table_weights()["shared"]}
    else:
        tables = PerFeatureTables(SCHEMA, {"user": 6, "item": 10})
        weights = {4: torch.cat([tables.table_weights()["user"], torch.zeros(10, 4)]),
                   8: torch.cat([torch.zeros(6, 8), tables.table_weights()["item"]])}
        if layout == "matryoshka":
            tables = MatryoshkaTables(tables, prefixes=[2, 4])
    kjt = _kjt(SCHEMA)
    pairs = row_vectors(tables, kjt, tables(kjt))
    lookups = 3 + 4 + 3 + 0 + 1 + 3  # user (one empty bag), item, the last 3 of each history
    probes = 2 if layout == "multiplexed" else 1
    assert sum(len(rows) for _, rows in pairs) == 3 + (lookups - 3) * probes
    for vectors, rows in pairs:
        torch.testing.assert_close(vectors, weights[vectors.shape[1]][rows], rtol=0, atol=0)
    frequencies = row_frequencies(tables, [kjt, kjt])
    assert int(frequencies.sum()) == 2 * sum(len(rows) for _, rows in pairs)
    if layout != "multiplexed":  # item 9: once as item, twice in a history; 5 and 7 fell off a history
        assert [frequencies[6 + i].item() for i in (9, 5, 7)] == [2 * 3, 2 * 2, 0]


def test_row_lookups_refuse_bags_of_several_ids_and_pruned_layouts() -> None:
    tables = PerFeatureTables(SCHEMA, {"user": 6, "item": 10})
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["user", "item", "hist"], torch.tensor([2, 3, 5, 6]), torch.tensor([2, 1, 0, 1, 0, 0])
    )
    with pytest.raises(ValueError, match="feature 'user': categorical bags must hold at most one id"):
        row_frequencies(tables, [kjt])
    with pytest.raises(ValueError, match="outputs of layout 'pruned' are not its table rows"):
        row_frequencies(PrunedTables(SCHEMA, {"user": 6, "item": 10}), [kjt])


def test_frequencies_docstring_examples() -> None:
    result = doctest.testmod(frequencies, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
