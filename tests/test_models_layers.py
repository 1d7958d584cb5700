"""Layers: Dice, PReLU, MLP block, DIN's local activation unit, AutoInt's interacting layer, pooling."""

import pytest
import torch

from recsys_embed.models.layers import (
    Dice,
    FlatInputs,
    InteractingLayer,
    LocalActivationUnit,
    MLPBlock,
    PReLU,
    make_activation,
    masked_mean,
    masked_sum,
)
from recsys_embed.tables.base import Embeddings, EmbeddingShapes


def test_dice_matches_its_formula_in_eval_mode() -> None:
    torch.manual_seed(0)
    dice = Dice(4)
    dice.running_mean.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
    dice.running_var.copy_(torch.tensor([1.0, 4.0, 0.25, 9.0]))
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.1, -0.3, 0.7, 0.0]))
    dice.eval()
    x = torch.randn(6, 3, 4)
    p = torch.sigmoid((x - dice.running_mean) / torch.sqrt(dice.running_var + dice.eps))
    expected = p * x + (1 - p) * dice.alpha * x
    torch.testing.assert_close(dice(x), expected)


def test_dice_uses_batch_statistics_while_training_and_updates_running_ones() -> None:
    torch.manual_seed(1)
    dice = Dice(3, momentum=0.5).train()
    x = torch.randn(32, 3) * 3 + 1
    mean, var = x.mean(0), x.var(0, unbiased=False)
    p = torch.sigmoid((x - mean) / torch.sqrt(var + dice.eps))
    torch.testing.assert_close(dice(x), p * x)  # alpha starts at 0
    torch.testing.assert_close(dice.running_mean, 0.5 * mean)
    assert dice(x[:1]).shape == (1, 3)  # one row: running statistics, no error


def test_prelu_slopes_apply_to_last_dim() -> None:
    prelu = PReLU(2)
    with torch.no_grad():
        prelu.weight.copy_(torch.tensor([0.5, 0.1]))
    x = torch.tensor([[[-2.0, -10.0], [3.0, 4.0], [-1.0, 1.0]]])  # [1, L=3, H=2]
    assert prelu(x).tolist() == [[[-1.0, -1.0], [3.0, 4.0], [-0.5, 1.0]]]


def test_unknown_activation_and_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="activation 'swish'"):
        make_activation("swish", 3)
    with pytest.raises(ValueError, match="sizes must be > 0"):
        MLPBlock(4, (8, 0))


def test_interacting_layer_is_permutation_equivariant_over_fields() -> None:
    torch.manual_seed(2)
    for in_dim in (8, 6):  # identity residual, projected residual
        layer = InteractingLayer(in_dim=in_dim, head_dim=4, num_heads=2)
        x = torch.randn(5, 7, in_dim)
        perm = torch.randperm(7)
        torch.testing.assert_close(layer(x[:, perm]), layer(x)[:, perm])
        assert layer(x).shape == (5, 7, 8)


def test_interacting_layer_mixes_fields() -> None:
    torch.manual_seed(3)
    layer = InteractingLayer(in_dim=4, head_dim=4, num_heads=1)
    x = torch.randn(2, 3, 4)
    changed = x.clone()
    changed[:, 2] += 5.0
    assert not torch.allclose(layer(x)[:, 0], layer(changed)[:, 0])  # field 0 attends to field 2


def test_interacting_layer_matches_the_per_head_equations() -> None:
    """Eqs. 5-8 of Song et al. 2019 written out head by head, against the batched layer."""
    torch.manual_seed(5)
    layer = InteractingLayer(in_dim=5, head_dim=3, num_heads=2)  # 5 -> 6: projected residual
    x = torch.randn(4, 7, 5)
    w_query, w_key, w_value = layer.query_key_value.weight.chunk(3)
    heads = []
    for h in range(2):
        rows = slice(3 * h, 3 * h + 3)
        q, k, v = (x @ w[rows].T for w in (w_query, w_key, w_value))
        heads.append(torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v)
    expected = torch.relu(torch.cat(heads, dim=-1) + x @ layer.residual.weight.T)
    torch.testing.assert_close(layer(x), expected)


def test_interacting_layer_projections_start_xavier_uniform() -> None:
    torch.manual_seed(6)
    layer = InteractingLayer(in_dim=48, head_dim=16, num_heads=2)  # 48 -> 32: projected residual
    for weight in (*layer.query_key_value.weight.detach().chunk(3), layer.residual.weight.detach()):
        bound = (6 / (48 + 32)) ** 0.5
        assert weight.abs().max() <= bound
        assert abs(float(weight.std()) - bound / 3**0.5) < 0.1 * bound


def test_local_activation_unit_ignores_masked_positions_and_softmax_normalises() -> None:
    torch.manual_seed(4)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False], [False] * 4])
    history, candidate = torch.randn(3, 4, 6), torch.randn(3, 6)
    for softmax in (False, True):
        unit = LocalActivationUnit(6, hidden=(8,), activation="dice", softmax=softmax).train()
        weights = unit(history, candidate, mask)
        noisy = history.clone()
        noisy[~mask] = torch.randn(int((~mask).sum()), 6) * 100
        torch.testing.assert_close(unit(noisy, candidate, mask), weights)
        assert (weights[~mask] == 0).all()
        if softmax:
            torch.testing.assert_close(weights.sum(1), torch.tensor([1.0, 1.0, 0.0]))


def test_masked_mean_and_flat_inputs() -> None:
    seq = torch.arange(12.0).reshape(2, 3, 2)
    mask = torch.tensor([[True, False, True], [False, True, False]])
    assert masked_mean(seq, mask).tolist() == [[2.0, 3.0], [8.0, 9.0]]
    noisy = seq.masked_fill(~mask.unsqueeze(-1), 1e6)  # what masked positions hold does not matter
    assert masked_mean(noisy, mask).tolist() == [[2.0, 3.0], [8.0, 9.0]]
    assert masked_sum(noisy, mask).tolist() == [[4.0, 6.0], [8.0, 9.0]]
    shapes = EmbeddingShapes(pooled={"a": 2}, sequences={"s": (3, 2)}, num_dense=1)
    emb = Embeddings(pooled={"a": torch.ones(2, 2)}, sequences={"s": seq}, masks={"s": mask})
    flat = FlatInputs(shapes)
    out = flat(emb, torch.tensor([[7.0], [8.0]]))
    assert out.tolist() == [[1.0, 1.0, 2.0, 3.0, 7.0], [1.0, 1.0, 8.0, 9.0, 8.0]]
    with pytest.raises(ValueError, match="dense must be"):
        flat(emb, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="sequence 's'"):
        flat(Embeddings(pooled={"a": torch.ones(2, 2)}), torch.zeros(2, 1))
