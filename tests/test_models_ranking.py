"""Next-item ranking (full and sampled) and the popularity baseline."""

import pytest
import torch

from recsys_embed.metrics import hit_rate, mrr, ndcg
from recsys_embed.models import Popularity, rank_of, sample_negatives

# ids 0..6 (the pipeline's): 0 pads, 1 out-of-vocabulary, 2..6 items
SCORES = torch.tensor(
    [
        [100.0, 100.0, 0.1, 0.9, 0.5, 0.7, 0.3],
        [100.0, 100.0, 0.4, 0.4, 0.4, 0.9, 0.1],
    ]
)


def test_full_ranking_on_hand_made_scores() -> None:
    targets = torch.tensor([5, 3])
    # row 0: only item 3 (0.9) beats 0.7; padding and OOV ids never count. row 1: 5 beats, 2 and 4 tie
    assert rank_of(SCORES, targets).tolist() == [2.0, 3.0]
    history = torch.tensor([[3, 6, 0], [5, 3, 2]])  # row 1's history holds its target: still ranked
    assert rank_of(SCORES, targets, exclude=history).tolist() == [1.0, 1.5]
    ranks = rank_of(SCORES, torch.tensor([2, 6]))
    assert ranks.tolist() == [5.0, 5.0]
    assert hit_rate(ranks.numpy(), 5) == 1.0 and mrr(ranks.numpy(), 5) == 0.2
    assert ndcg(rank_of(SCORES, torch.tensor([3, 5])).numpy(), 1) == 1.0


def test_sampled_ranking_on_hand_made_scores() -> None:
    negatives = torch.tensor([[2, 6, 3], [4, 6, 2]])
    assert rank_of(SCORES, torch.tensor([5, 3]), negatives=negatives).tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="contain the target"):
        rank_of(SCORES, torch.tensor([2, 3]), negatives=negatives)
    with pytest.raises(ValueError, match="exclude only for full ranking"):
        rank_of(SCORES, torch.tensor([5, 3]), exclude=negatives, negatives=negatives)


def test_rank_of_rejects_bad_targets() -> None:
    with pytest.raises(ValueError, match="padding id 0 or the out-of-vocabulary id 1"):
        rank_of(SCORES, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="out-of-vocabulary id 1"):
        rank_of(SCORES, torch.tensor([1, 2]))
    with pytest.raises(IndexError, match=r"targets: item ids must lie in \[0, 7\)"):
        rank_of(SCORES, torch.tensor([7, 2]))
    with pytest.raises(TypeError, match="integer item ids"):
        rank_of(SCORES, torch.tensor([1.0, 2.0]))


def test_sample_negatives_avoids_target_history_padding_and_oov() -> None:
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(2, 12, (500,), generator=g)
    history = torch.randint(0, 12, (500, 4), generator=g)
    negatives = sample_negatives(targets, rows=12, num_negatives=3, exclude=history, generator=g)
    assert negatives.shape == (500, 3)
    assert (negatives >= 2).all() and (negatives <= 11).all()
    assert not (negatives == targets[:, None]).any()
    assert not (negatives[:, :, None] == history[:, None, :]).any()
    assert (negatives.sort(1).values.diff(dim=1) != 0).all()  # distinct per row
    with pytest.raises(ValueError, match="row 0 has only 2 items left"):
        sample_negatives(torch.tensor([2]), rows=6, num_negatives=3, exclude=torch.tensor([[3]]))


def test_popularity_sampling_follows_the_counts() -> None:
    counts = torch.tensor([50, 50, 0, 90, 10, 0])  # ids 0..5 (4 items); padding and OOV counts are ignored
    g = torch.Generator().manual_seed(0)
    negatives = sample_negatives(torch.full((4000,), 2), 6, 1, popularity=counts, generator=g)
    share = (negatives == 3).float().mean().item()
    assert set(negatives.unique().tolist()) == {3, 4} and abs(share - 0.9) < 0.03


def test_popularity_fits_counts_and_ranks_by_them() -> None:
    batches = [torch.tensor([[2, 3, 3, 0], [3, 4, 0, 0]]), torch.tensor([[4, 3, 5, 5]])]
    model = Popularity(rows=7).fit(iter(batches))
    assert model.counts.tolist() == [0, 0, 1, 4, 2, 2, 0]
    assert model.fit(batches[1]).counts.tolist() == [0, 0, 0, 1, 1, 2, 0]  # refit replaces
    model.fit(batches)
    history = torch.tensor([[3, 0], [2, 4]])
    scores = model.score_next(2)
    assert scores.shape == (2, 7) and torch.isinf(scores[:, :2]).all()
    assert rank_of(scores, torch.tensor([4, 3])).tolist() == [2.5, 1.0]
    assert rank_of(scores, torch.tensor([4, 3]), exclude=history).tolist() == [1.5, 1.0]
    assert Popularity(7).load_state_dict(model.state_dict()) is not None
    with pytest.raises(IndexError, match="Popularity.fit ids"):
        model.fit(torch.tensor([[7]]))
