"""Mini-batch aware L2: unique rows once, scaled by inverse frequency, and through fused tables."""

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.models import mini_batch_aware_l2
from recsys_embed.tables.base import TableOptimizer
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
