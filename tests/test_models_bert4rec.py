"""BERT4Rec: Cloze masking, the tied output layer, bidirectionality, next-item scoring, learning,
and the item table of a layout (``table_vectors``) trained through both sides of the tie."""

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.metrics import hit_rate
from recsys_embed.models import BERT4Rec, BERT4RecConfig, append_mask, cloze_mask, rank_of
from recsys_embed.tables import MultiplexedConfig, MultiplexedTables, PerFeatureTables, TableOptimizer

CONFIG = BERT4RecConfig(max_len=6, dim=16, num_layers=2, num_heads=2, dropout=0.0)
ROWS = 22  # 0 pads, 1 out-of-vocabulary, 2..21 items


def left_aligned(lengths: torch.Tensor, max_len: int, rows: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(2, rows, (lengths.numel(), max_len), generator=g)
    return items.masked_fill(torch.arange(max_len)[None, :] >= lengths[:, None], 0)


def test_cloze_masks_about_mask_prob_of_real_positions_and_never_padding() -> None:
    g = torch.Generator().manual_seed(0)
    items = left_aligned(torch.randint(0, 51, (400,), generator=g), 50, 1000)
    masked = cloze_mask(items != 0, 0.3, generator=g)
    assert not (masked & (items == 0)).any()
    share = masked.sum().item() / (items != 0).sum().item()
    assert abs(share - 0.3) < 0.02, share
    with pytest.raises(ValueError, match="mask_prob"):
        cloze_mask(items != 0, 1.0)


def test_output_layer_is_the_item_table_and_masked_positions_read_the_mask_vector() -> None:
    torch.manual_seed(0)
    model = BERT4Rec(CONFIG, ROWS)
    table = torch.randn(ROWS, CONFIG.dim)
    hidden = torch.randn(3, CONFIG.dim)
    expected = model.transform(hidden) @ table.T + model.output_bias
    torch.testing.assert_close(model.logits(hidden, table), expected)
    changed = table.clone()
    changed[7] += 1.0
    out = model.logits(hidden, changed)
    assert not torch.allclose(out[:, 7], expected[:, 7]) and torch.allclose(out[:, 8], expected[:, 8])
    with pytest.raises(ValueError, match=r"item_vectors must be \[22, 16\]"):
        model.logits(hidden, table[:5])
    # a masked position reads the mask vector, whatever the item embedding there
    model.eval()
    ids = torch.tensor([[2, 3, 4, 0, 0, 0]])
    masked = torch.tensor([[False, True, False, False, False, False]])
    other = table.clone()
    other[3] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(model(table[ids], ids != 0, masked), model(other[ids], ids != 0, masked))
    # the loss trains rows of items that never appear in the input, through the output layer
    vectors = table.clone().requires_grad_()
    model.cloze_loss(vectors[ids], ids != 0, masked, ids, vectors).backward()
    assert vectors.grad[15].abs().sum() > 0 and model.mask_vector.grad.abs().sum() > 0
    assert vectors.grad[3].abs().sum() > 0  # the masked item's row: its target logit


def test_encoder_is_bidirectional_and_ignores_padding() -> None:
    torch.manual_seed(1)
    model = BERT4Rec(CONFIG, ROWS).eval()
    table = torch.randn(ROWS, CONFIG.dim)
    items = torch.tensor([[3, 4, 5, 6, 0, 0]])
    later = items.clone()
    later[0, 3] = 9
    with torch.no_grad():
        hidden, changed = model(table[items], items != 0), model(table[later], later != 0)
    assert not torch.allclose(hidden[0, :3], changed[0, :3])  # earlier positions see a later item
    shorter = items[:, :5]
    with torch.no_grad():
        torch.testing.assert_close(model(table[shorter], shorter != 0)[0, :4], hidden[0, :4])  # padding is not attended
        empty = torch.zeros(2, 6, dtype=torch.int64)
        assert torch.isfinite(model(table[empty], empty != 0)).all()  # all-padding rows


def test_append_mask_and_score_next() -> None:
    history = torch.tensor([[3, 4, 0], [5, 6, 7], [0, 0, 0]])
    inputs, real, position = append_mask(history, history != 0, max_len=4)
    assert inputs.tolist() == [[3, 4, 0, 0], [5, 6, 7, 0], [0, 0, 0, 0]] and position.tolist() == [2, 3, 0]
    assert real.tolist() == [[True, True, True, False], [True, True, True, True], [True, False, False, False]]
    inputs, real, position = append_mask(history[:2], history[:2] != 0, max_len=3)
    assert inputs.tolist() == [[3, 4, 0], [6, 7, 0]] and position.tolist() == [2, 2] and real.all()
    vectors = torch.arange(8.0)[:, None].expand(8, 2)  # [B, L, D] embeddings shift the same way
    assert append_mask(vectors[history[:2]], history[:2] != 0, 3)[0][1, :, 0].tolist() == [6.0, 7.0, 0.0]
    with pytest.raises(ValueError, match="row 1 is not left-aligned"):
        bad = torch.tensor([[3, 0], [0, 4]])
        append_mask(bad, bad != 0, max_len=4)
    model = BERT4Rec(CONFIG, ROWS).eval()
    table = torch.randn(ROWS, CONFIG.dim)
    ids = left_aligned(torch.tensor([0, 3, 6]), 6, ROWS)
    with torch.no_grad():
        scores = model.score_next(table[ids], ids != 0, table)
    assert scores.shape == (3, ROWS)
    assert torch.isinf(scores[:, :2]).all() and torch.isfinite(scores[:, 2:]).all()
    with pytest.raises(ValueError, match="max_len=6"):
        model(torch.ones(1, 7, CONFIG.dim), torch.ones(1, 7, dtype=torch.bool))


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def runs(batch: int, g: torch.Generator, items: int, max_len: int) -> torch.Tensor:
    """Sequences that count upward from a random item (wrapping): the next item is always +1."""
    start = torch.randint(0, items, (batch, 1), generator=g)
    ids = (start + torch.arange(max_len)) % items + 2
    lengths = torch.randint(3, max_len + 1, (batch,), generator=g)
    return ids.masked_fill(torch.arange(max_len)[None, :] >= lengths[:, None], 0)


def test_bert4rec_learns_to_predict_the_next_item(one_thread: None) -> None:
    torch.manual_seed(0)
    config = BERT4RecConfig(max_len=8, dim=32, num_layers=1, num_heads=2, dropout=0.0)
    model = BERT4Rec(config, rows=32)
    table = nn.Embedding(32, 32)
    nn.init.trunc_normal_(table.weight, std=0.02)
    optimizer = torch.optim.Adam([*model.parameters(), table.weight], lr=3e-3)
    g = torch.Generator().manual_seed(1)
    held_out = runs(256, torch.Generator().manual_seed(2), 30, 9)
    lengths = (held_out != 0).sum(1)
    targets = held_out[torch.arange(256), lengths - 1]  # hold the last item out
    history = held_out.masked_fill(torch.arange(9)[None, :] == lengths[:, None] - 1, 0)[:, :8]

    def mean_rank() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            ranks = rank_of(model.score_next(table(history), history != 0, table.weight), targets, exclude=history)
        model.train()
        return ranks.mean().item(), hit_rate(ranks.numpy(), 1)

    rank_before, _ = mean_rank()
    losses = []
    for _ in range(250):
        ids = runs(64, g, 30, 8)
        masked = cloze_mask(ids != 0, 0.3, generator=g)
        loss = model.cloze_loss(table(ids), ids != 0, masked, ids, table.weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    rank_after, hr1 = mean_rank()
    assert rank_before > 5 and rank_after < 2 and hr1 > 0.7, (rank_before, rank_after, hr1)
    assert sum(losses[-20:]) / 20 < 0.3 * sum(losses[:20]) / 20


SCHEMA = Schema([FeatureSpec("items", kind="sequence", max_len=4, embedding_dim=8)], label=None)


@pytest.mark.parametrize("layout", ["per_feature", "multiplexed"])
def test_table_vectors_are_the_rows_forward_reads_and_train_through_the_fused_optimizer(layout: str) -> None:
    """``table_vectors(group)`` gives, for every id, the vector ``forward`` gives it, and a loss
    on them updates the table through its fused optimizer (SGD: exactly ``w - lr * grad``)."""
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    sgd = TableOptimizer("sgd", lr=0.5)
    if layout == "per_feature":
        tables = PerFeatureTables(SCHEMA, {"items": 12}, sgd)
    else:
        tables = MultiplexedTables(SCHEMA, MultiplexedConfig(rows=40, chunk_dim=4, probes=2), sgd, vocab_sizes={"items": 12})
    vectors = tables.table_vectors("items")
    assert vectors.shape == (12, 8) and vectors.requires_grad
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["items"], values=torch.tensor([5, 7, 2, 11, 3]), lengths=torch.tensor([3, 2]))
    out = tables(kjt)
    torch.testing.assert_close(out.sequences["items"][0, :3], vectors.detach()[[5, 7, 2]])
    before = tables.table_vectors("items").detach().clone()
    target = torch.randn(12, 8)
    ((vectors - target) ** 2).sum().backward()  # d/dv = 2 (v - t)
    after = tables.table_vectors("items").detach()
    if layout == "per_feature":
        torch.testing.assert_close(after, before - 0.5 * 2 * (before - target))
    else:
        assert not torch.allclose(after, before)
    with pytest.raises(ValueError, match="no table group 'user'"):
        tables.table_vectors("user")
    # the layout's forward and table_vectors in one graph: both reads update the rows, no autograd error
    before = tables.table_vectors("items").detach().clone()
    (tables(kjt).sequences["items"].sum() + tables.table_vectors("items").sum()).backward()
    assert not torch.allclose(tables.table_vectors("items").detach(), before)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rowwise_adagrad"])
def test_table_vectors_update_equals_the_kernel_update(optimizer: str) -> None:
    """The dense update behind ``table_vectors`` is the fused kernel's: the same gradients read
    once per row through ``forward`` give the same weights and optimizer state."""
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    schema = Schema([FeatureSpec("item", table="items", embedding_dim=8)], label=None)
    torch.manual_seed(0)
    through_kernel = PerFeatureTables(schema, {"items": 23}, TableOptimizer(optimizer, lr=0.3))
    dense = PerFeatureTables(schema, {"items": 23}, TableOptimizer(optimizer, lr=0.3))
    dense.load_state_dict(through_kernel.state_dict())
    every_row = KeyedJaggedTensor.from_lengths_sync(keys=["item"], values=torch.arange(23), lengths=torch.ones(23, dtype=torch.int64))
    for step in range(3):
        grad = torch.randn(23, 8, generator=torch.Generator().manual_seed(step))
        grad[4] = 0.0  # a row without gradient stays as it is
        (through_kernel(every_row).pooled["item"] * grad).sum().backward()
        (dense.table_vectors("items") * grad).sum().backward()
    for name, value in through_kernel.kernel.state_views().items():
        if name != "step":  # the kernel's forward counter
            torch.testing.assert_close(dense.kernel.state_views()[name], value, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        assert not dense.table_vectors("items").requires_grad


def test_last_item_rows_mask_their_last_item_only() -> None:
    """``last_item_prob=1``: every row trains the recommending task (its last real item masked);
    0: plain Cloze, the same loss as ``cloze_loss`` with the same draws."""
    items = left_aligned(torch.tensor([6, 3, 1, 4]), 6, ROWS)
    mask = items != 0
    torch.manual_seed(0)
    table = torch.randn(ROWS, CONFIG.dim)
    last_only = BERT4Rec(BERT4RecConfig(**{**CONFIG.__dict__, "last_item_prob": 1.0}), ROWS).eval()
    expected_mask = torch.zeros_like(mask)
    expected_mask[torch.arange(4), torch.tensor([5, 2, 0, 3])] = True
    expected = last_only.cloze_loss(table[items], mask, expected_mask, items, table)
    assert torch.allclose(last_only.training_loss(table[items], mask, items, table), expected)
    plain = BERT4Rec(CONFIG, ROWS).eval()
    torch.manual_seed(3)
    loss = plain.training_loss(table[items], mask, items, table)
    torch.manual_seed(3)
    assert torch.equal(loss, plain.cloze_loss(table[items], mask, cloze_mask(mask, CONFIG.mask_prob), items, table))
    with pytest.raises(ValueError, match="last_item_prob must lie in"):
        BERT4RecConfig(last_item_prob=1.5)
