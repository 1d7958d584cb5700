"""BERT4Rec: Cloze masking, the tied output layer, bidirectionality, next-item scoring, learning."""

from collections.abc import Iterator

import pytest
import torch

from recsys_embed.metrics import hit_rate
from recsys_embed.models import BERT4Rec, BERT4RecConfig, append_mask, cloze_mask, rank_of

CONFIG = BERT4RecConfig(num_items=20, max_len=6, dim=16, num_layers=2, num_heads=2, dropout=0.0)


def left_aligned(lengths: torch.Tensor, max_len: int, num_items: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, num_items + 1, (lengths.numel(), max_len), generator=g)
    return items.masked_fill(torch.arange(max_len)[None, :] >= lengths[:, None], 0)


def test_cloze_masks_about_mask_prob_of_real_items_and_never_padding() -> None:
    g = torch.Generator().manual_seed(0)
    items = left_aligned(torch.randint(0, 51, (400,), generator=g), 50, 1000)
    inputs, targets = cloze_mask(items, 0.3, mask_id=1001, generator=g)
    real, masked = items != 0, inputs == 1001
    assert not (masked & ~real).any()
    share = masked.sum().item() / real.sum().item()
    assert abs(share - 0.3) < 0.02, share
    assert torch.equal(targets[masked], items[masked]) and (targets[~masked] == 0).all()
    assert torch.equal(inputs[~masked], items[~masked])
    with pytest.raises(ValueError, match="mask_prob"):
        cloze_mask(items, 1.0, 1001)


def test_output_layer_is_the_item_embedding_table() -> None:
    torch.manual_seed(0)
    model = BERT4Rec(CONFIG)
    hidden = torch.randn(3, CONFIG.dim)
    expected = model.transform(hidden) @ model.items.weight.T + model.output_bias
    torch.testing.assert_close(model.logits(hidden), expected)
    with torch.no_grad():
        model.items.weight[7] += 1.0
    changed = model.logits(hidden)
    assert not torch.allclose(changed[:, 7], expected[:, 7]) and torch.allclose(changed[:, 8], expected[:, 8])
    # the loss trains rows of items that never appear in the input, through the output layer
    inputs = torch.tensor([[1, 2, CONFIG.mask_id, 0, 0, 0]])
    model.cloze_loss(inputs, torch.tensor([[0, 0, 3, 0, 0, 0]])).backward()
    assert model.items.weight.grad[15].abs().sum() > 0
    assert not any(p is model.items.weight for name, p in model.named_parameters() if not name.startswith("items."))


def test_encoder_is_bidirectional_and_ignores_padding() -> None:
    torch.manual_seed(1)
    model = BERT4Rec(CONFIG).eval()
    items = torch.tensor([[3, 4, 5, 6, 0, 0]])
    later = items.clone()
    later[0, 3] = 9
    with torch.no_grad():
        hidden, changed = model(items), model(later)
    assert not torch.allclose(hidden[0, :3], changed[0, :3])  # earlier positions see a later item
    shorter = torch.tensor([[3, 4, 5, 6, 0]])
    with torch.no_grad():
        torch.testing.assert_close(model(shorter)[0, :4], hidden[0, :4])  # padding is not attended
        assert torch.isfinite(model(torch.zeros(2, 6, dtype=torch.int64))).all()  # all-padding rows


def test_append_mask_and_score_next() -> None:
    inputs, position = append_mask(torch.tensor([[3, 4, 0], [5, 6, 7], [0, 0, 0]]), mask_id=9, max_len=4)
    assert inputs.tolist() == [[3, 4, 9, 0], [5, 6, 7, 9], [9, 0, 0, 0]] and position.tolist() == [2, 3, 0]
    inputs, position = append_mask(torch.tensor([[3, 4, 0], [5, 6, 7]]), mask_id=9, max_len=3)
    assert inputs.tolist() == [[3, 4, 9], [6, 7, 9]] and position.tolist() == [2, 2]
    with pytest.raises(ValueError, match="row 1 is not left-aligned"):
        append_mask(torch.tensor([[3, 0], [0, 4]]), mask_id=9, max_len=4)
    model = BERT4Rec(CONFIG).eval()
    with torch.no_grad():
        scores = model.score_next(left_aligned(torch.tensor([0, 3, 6]), 6, 20))
    assert scores.shape == (3, 22)
    assert torch.isinf(scores[:, [0, 21]]).all() and torch.isfinite(scores[:, 1:21]).all()
    with pytest.raises(IndexError, match=r"history: item ids must lie in \[0, 20\]"):
        model.score_next(torch.tensor([[21, 0]]))
    with pytest.raises(ValueError, match="max_len=6"):
        model(torch.ones(1, 7, dtype=torch.int64))


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def runs(batch: int, g: torch.Generator, num_items: int, max_len: int) -> torch.Tensor:
    """Sequences that count upward from a random item (wrapping): the next item is always +1."""
    start = torch.randint(0, num_items, (batch, 1), generator=g)
    items = (start + torch.arange(max_len)) % num_items + 1
    lengths = torch.randint(3, max_len + 1, (batch,), generator=g)
    return items.masked_fill(torch.arange(max_len)[None, :] >= lengths[:, None], 0)


def test_bert4rec_learns_to_predict_the_next_item(one_thread: None) -> None:
    torch.manual_seed(0)
    config = BERT4RecConfig(num_items=30, max_len=8, dim=32, num_layers=1, num_heads=2, dropout=0.0)
    model = BERT4Rec(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    held_out = runs(256, torch.Generator().manual_seed(2), 30, 9)
    lengths = (held_out != 0).sum(1)
    targets = held_out[torch.arange(256), lengths - 1]  # hold the last item out
    history = held_out.masked_fill(torch.arange(9)[None, :] == lengths[:, None] - 1, 0)[:, :8]

    def mean_rank() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            ranks = rank_of(model.score_next(history), targets, exclude=history)
        model.train()
        return ranks.mean().item(), hit_rate(ranks.numpy(), 1)

    rank_before, _ = mean_rank()
    losses = []
    for _ in range(250):
        inputs, cloze_targets = cloze_mask(runs(64, g, 30, 8), 0.3, config.mask_id, generator=g)
        loss = model.cloze_loss(inputs, cloze_targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    rank_after, hr1 = mean_rank()
    assert rank_before > 5 and rank_after < 2 and hr1 > 0.7, (rank_before, rank_after, hr1)
    assert sum(losses[-20:]) / 20 < 0.3 * sum(losses[:20]) / 20
