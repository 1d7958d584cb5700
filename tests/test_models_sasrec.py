"""SASRec: causal attention, the full and sampled cross-entropy against their formulas, scoring
from the last real position, padding invariance, and the config's checks."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from recsys_embed.models import SASRec, SASRecConfig

CONFIG = SASRecConfig(max_len=6, dim=16, num_layers=2, num_heads=2, dropout=0.0)
ROWS = 30


def model_and_table(config: SASRecConfig = CONFIG) -> tuple[SASRec, torch.Tensor]:
    torch.manual_seed(0)
    return SASRec(config, ROWS).eval(), torch.randn(ROWS, config.dim)


def test_a_position_sees_only_the_items_before_it() -> None:
    model, table = model_and_table()
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    changed = ids.clone()
    changed[0, 3] = 20
    with torch.no_grad():
        before, after = model(table[ids], ids != 0), model(table[changed], changed != 0)
    assert torch.allclose(before[:, :3], after[:, :3], atol=1e-6)
    assert not torch.allclose(before[:, 3:], after[:, 3:], atol=1e-3)


def test_full_cross_entropy_is_the_mean_over_every_next_item() -> None:
    model, table = model_and_table()
    rows = torch.tensor([[3, 4, 5, 0, 0, 0, 0], [7, 8, 9, 10, 11, 12, 13]])  # max_len + 1 ids a row
    mask = rows != 0
    with torch.no_grad():
        loss = model.training_loss(table[rows], mask, rows, table)
        hidden = model(table[rows[:, :-1]], mask[:, :-1])
        real = mask[:, 1:]
        logits = hidden[real] @ table.T
        logits[:, :2] = float("-inf")  # padding and out-of-vocabulary are never targets
        expected = F.cross_entropy(logits, rows[:, 1:][real])
    assert real.sum() == 2 + 6 and torch.allclose(loss, expected, atol=1e-6)


def test_sampled_softmax_ranks_the_target_against_shared_negatives() -> None:
    model, table = model_and_table(SASRecConfig(max_len=6, dim=16, num_heads=2, dropout=0.0, negatives=8))
    rows = torch.tensor([[3, 4, 5, 6, 0, 0, 0]])
    mask = rows != 0
    torch.manual_seed(5)
    with torch.no_grad():
        loss = model.training_loss(table[rows], mask, rows, table)
    torch.manual_seed(5)
    negatives = torch.randint(2, ROWS, (8,))
    with torch.no_grad():
        hidden = model(table[rows[:, :-1]], mask[:, :-1])[mask[:, 1:]]
        targets = rows[:, 1:][mask[:, 1:]]
        sampled = (hidden @ table[negatives].T).masked_fill(negatives[None] == targets[:, None], float("-inf"))
        logits = torch.cat([(hidden * table[targets]).sum(1, keepdim=True), sampled], 1)
        expected = F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long))
    assert torch.allclose(loss, expected, atol=1e-6)
    rows.requires_grad_(False)
    items = table[rows].requires_grad_(True)
    model.train().training_loss(items, mask, rows, table).backward()
    assert items.grad is not None and torch.isfinite(items.grad).all()


def test_scores_come_from_the_last_real_position_and_ignore_padding() -> None:
    model, table = model_and_table()
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[3, 4, 5, 0, 0, 0]])
    with torch.no_grad():
        a = model.score_next(table[short], short != 0, table)
        b = model.score_next(table[padded], padded != 0, table)
        hidden = model(table[short], short != 0)[:, -1]
    assert torch.allclose(a, b, atol=1e-5) and a.shape == (1, ROWS)
    assert torch.isinf(a[:, :2]).all() and torch.allclose(a[:, 2:], (hidden @ table.T)[:, 2:], atol=1e-5)
    empty = torch.zeros(1, 6, dtype=torch.long)
    assert torch.isfinite(model.score_next(table[empty], empty != 0, table)[:, 2:]).all()


def test_bad_shapes_and_configs_are_named() -> None:
    model, table = model_and_table()
    ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9]])
    with pytest.raises(ValueError, match="L <= max_len=6"):
        model(table[ids], ids != 0)
    with pytest.raises(ValueError, match=r"item_vectors must be \[30, 16\]"):
        model.score_next(table[ids[:, :3]], ids[:, :3] != 0, table[:10])
    with pytest.raises(ValueError, match="divisible by num_heads"):
        SASRecConfig(dim=10, num_heads=3)
    with pytest.raises(ValueError, match="dropout must lie in"):
        SASRecConfig(dropout=1.0)
    with pytest.raises(ValueError, match="more than 2 rows"):
        SASRec(CONFIG, rows=2)
    assert SASRecConfig(max_len=50).sequence_len == 51
