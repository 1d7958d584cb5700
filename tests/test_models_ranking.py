"""Next-item ranking (full and sampled) and the popularity baseline."""

import pytest
import torch

from recsys_embed.metrics import hit_rate, mrr, ndcg
from recsys_embed.models import Popularity, rank_of, sample_negatives

# ids 0..6: 0 pads, 1..5 items, 6 the mask token
SCORES = torch.tensor(
    [
        [100.0, 0.1, 0.9, 0.5, 0.7, 0.3, 100.0],
        [100.0, 0.4, 0.4, 0.4, 0.9, 0.1, 100.0],
    ]
)


def test_full_ranking_on_hand_made_scores() -> None:
    targets = torch.tensor([4, 2])
    # row 0: only item 2 (0.9) beats 0.7; padding and mask ids never count. row 1: 4 beats, 1 and 3 tie
    assert rank_of(SCORES, targets).tolist() == [2.0, 3.0]
    history = torch.tensor([[2, 5, 0], [4, 2, 1]])  # row 1's history holds its target: still ranked
    assert rank_of(SCORES, targets, exclude=history).tolist() == [1.0, 1.5]
    ranks = rank_of(SCORES, torch.tensor([1, 5]))
    assert ranks.tolist() == [5.0, 5.0]
    assert hit_rate(ranks.numpy(), 5) == 1.0 and mrr(ranks.numpy(), 5) == 0.2
    assert ndcg(rank_of(SCORES, torch.tensor([2, 4])).numpy(), 1) == 1.0


def test_sampled_ranking_on_hand_made_scores() -> None:
    negatives = torch.tensor([[1, 5, 2], [3, 5, 1]])
    assert rank_of(SCORES, torch.tensor([4, 2]), negatives=negatives).tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="contain the target"):
        rank_of(SCORES, torch.tensor([1, 2]), negatives=negatives)
    with pytest.raises(ValueError, match="exclude only for full ranking"):
        rank_of(SCORES, torch.tensor([4, 2]), exclude=negatives, negatives=negatives)


def test_rank_of_rejects_bad_targets() -> None:
    with pytest.raises(ValueError, match="padding id 0"):
        rank_of(SCORES, torch.tensor([0, 2]))
    with pytest.raises(IndexError, match=r"targets: item ids must lie in \[0, 5\]"):
        rank_of(SCORES, torch.tensor([6, 2]))
    with pytest.raises(TypeError, match="integer item ids"):
        rank_of(SCORES, torch.tensor([1.0, 2.0]))


def test_sample_negatives_avoids_target_history_padding_and_mask() -> None:
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(1, 11, (500,), generator=g)
    history = torch.randint(0, 11, (500, 4), generator=g)
    negatives = sample_negatives(targets, num_items=10, num_negatives=3, exclude=history, generator=g)
    assert negatives.shape == (500, 3)
    assert (negatives >= 1).all() and (negatives <= 10).all()
    assert not (negatives == targets[:, None]).any()
    assert not (negatives[:, :, None] == history[:, None, :]).any()
    assert (negatives.sort(1).values.diff(dim=1) != 0).all()  # distinct per row
    with pytest.raises(ValueError, match="row 0 has only 2 items left"):
        sample_negatives(torch.tensor([1]), num_items=4, num_negatives=3, exclude=torch.tensor([[2]]))


def test_popularity_sampling_follows_the_counts() -> None:
    counts = torch.tensor([50, 0, 90, 10, 0, 50])  # ids 0..5 (4 items); padding and mask counts are ignored
    g = torch.Generator().manual_seed(0)
    negatives = sample_negatives(torch.full((4000,), 1), 4, 1, popularity=counts, generator=g)
    share = (negatives == 2).float().mean().item()
    assert set(negatives.unique().tolist()) == {2, 3} and abs(share - 0.9) < 0.03


def test_popularity_fits_counts_and_ranks_by_them() -> None:
    batches = [torch.tensor([[1, 2, 2, 0], [2, 3, 0, 0]]), torch.tensor([[3, 2, 4, 4]])]
    model = Popularity(num_items=5).fit(iter(batches))
    assert model.counts.tolist() == [0, 1, 4, 2, 2, 0, 0]
    assert model.fit(batches[1]).counts.tolist() == [0, 0, 1, 1, 2, 0, 0]  # refit replaces
    model.fit(batches)
    history = torch.tensor([[2, 0], [1, 3]])
    scores = model.score_next(history)
    assert scores.shape == (2, 7) and torch.isinf(scores[:, [0, 6]]).all()
    assert rank_of(scores, torch.tensor([3, 2])).tolist() == [2.5, 1.0]
    assert rank_of(scores, torch.tensor([3, 2]), exclude=history).tolist() == [1.5, 1.0]
    assert Popularity(5).load_state_dict(model.state_dict()) is not None
    with pytest.raises(IndexError, match="Popularity.fit sequences"):
        model.fit(torch.tensor([[6]]))
