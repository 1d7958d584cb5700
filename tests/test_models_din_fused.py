"""DIN's fast paths against the same math written out plainly, in float64, forward and backward:
Dice fused (the compiled kernel in float32, row blocks otherwise), the local activation unit on packed positions with its first Linear
folded (and in cache-sized blocks in eval mode), DIN's interest over the packed history."""

from __future__ import annotations

import platform

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from recsys_embed.models import DIN, DINConfig
from recsys_embed.models.layers import Dice, LocalActivationUnit
from recsys_embed.models.layers.activation import DICE_KERNEL, dice, kernel_applies
from recsys_embed.models.layers.attention import EVAL_BLOCK_ELEMENTS
from recsys_embed.models.layers.blocks import BLOCK_ELEMENTS
from recsys_embed.tables.base import Embeddings, EmbeddingShapes


def reference_dice(dice: Dice, x: torch.Tensor, batch_stats: bool) -> torch.Tensor:
    """Zhou et al. 2018, eq. 7, with the statistics of ``x`` (biased variance) or the running ones."""
    flat = x.reshape(-1, x.shape[-1])
    if batch_stats:
        mean, var = flat.mean(0), flat.var(0, unbiased=False)
    else:
        mean, var = dice.running_mean, dice.running_var
    p = torch.sigmoid((x - mean) / torch.sqrt(var + dice.eps))
    return p * x + (1 - p) * dice.alpha * x


def reference_scores(unit: LocalActivationUnit, history: torch.Tensor, candidate: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``MLP([h, c, h - c, h * c])`` on the real positions, scattered into ``[B, L]`` (zeros elsewhere);
    softmax over each row's real positions when the unit normalises."""
    h = history[mask]
    c = candidate.unsqueeze(1).expand_as(history)[mask]
    x = torch.cat([h, c, h - c, h * c], dim=-1)
    for layer in [*unit.mlp.layers, unit.score]:
        x = reference_dice(layer, x, unit.training and x.shape[0] > 1) if isinstance(layer, Dice) else layer(x)
    weights = torch.zeros(mask.shape, dtype=x.dtype).masked_scatter(mask, x.squeeze(-1))
    if unit.softmax:
        exp = torch.where(mask, (weights - weights.max()).exp(), torch.zeros_like(weights))
        weights = exp / exp.sum(1, keepdim=True).clamp(min=1e-300)
    return weights


def randomize(module: nn.Module, seed: int) -> None:
    """Non-trivial Dice parameters and running statistics (alpha starts at 0, the stats at 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, Dice):
                m.alpha.copy_(torch.rand(m.alpha.shape, generator=g, dtype=m.alpha.dtype) * 2 - 1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=m.running_mean.dtype))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=m.running_var.dtype) + 0.5)


def grads(params: list[torch.Tensor]) -> list[torch.Tensor]:
    out = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("rows", [0, 1, 7, 3 * BLOCK_ELEMENTS // 5 + 11])  # the last spans several row blocks
def test_dice_forward_backward_and_running_stats_match_the_formula(training: bool, rows: int) -> None:
    torch.manual_seed(rows)
    dice = Dice(5, momentum=0.3).double().train(training)
    randomize(dice, rows)
    plain = Dice(5, momentum=0.3).double()
    plain.load_state_dict(dice.state_dict())
    x = (torch.randn(rows, 5, dtype=torch.float64) * 3 + 1).requires_grad_()
    x_plain = x.detach().clone().requires_grad_()
    batch_stats = training and rows > 1
    y, y_plain = dice(x), reference_dice(plain, x_plain, batch_stats)
    torch.testing.assert_close(y, y_plain)
    if batch_stats:  # momentum update, unbiased variance (as batch norm keeps it)
        torch.testing.assert_close(dice.running_mean, 0.7 * plain.running_mean + 0.3 * x_plain.detach().mean(0))
        torch.testing.assert_close(dice.running_var, 0.7 * plain.running_var + 0.3 * x_plain.detach().var(0))
    else:
        torch.testing.assert_close(dice.running_mean, plain.running_mean)
    upstream = torch.randn_like(y)
    (y * upstream).sum().backward()
    (y_plain * upstream).sum().backward()
    torch.testing.assert_close(x.grad, x_plain.grad)
    torch.testing.assert_close(dice.alpha.grad, plain.alpha.grad)


def test_dice_keeps_leading_dims_and_float32_agrees_with_float64() -> None:
    torch.manual_seed(1)
    dice = Dice(4).train()
    randomize(dice, 1)
    x = torch.randn(6, 9, 4)
    wide = Dice(4).double().train()
    wide.load_state_dict(dice.state_dict())
    torch.testing.assert_close(dice(x), wide(x.double()).float(), rtol=1e-5, atol=1e-5)
    assert dice(x).shape == (6, 9, 4)


def test_the_dice_kernel_is_built_and_used_on_this_machine() -> None:
    if platform.machine() != "x86_64" or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("the kernel is built for x86-64 with AVX2 only")
    assert DICE_KERNEL and kernel_applies(torch.zeros(3, 80))
    assert not kernel_applies(torch.zeros(3, 80, dtype=torch.float64))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("width", [1, 5, 8, 13, 80])  # whole lanes of 8 and a masked tail
@pytest.mark.parametrize("rows", [1, 70, 2500])  # 2500: several flushes (64 rows) and chunks (1024)
def test_dice_float32_matches_the_formula_in_float64(training: bool, width: int, rows: int) -> None:
    torch.manual_seed(width * 10_000 + rows)
    dice32 = Dice(width, momentum=0.2).train(training)
    randomize(dice32, rows)
    plain = Dice(width, momentum=0.2).double()
    plain.load_state_dict(dice32.state_dict())
    x = (torch.randn(rows, width) * 2 + torch.linspace(-3, 30, width)).requires_grad_()  # means far from 0
    x_plain = x.detach().double().requires_grad_()
    batch_stats = training and rows > 1
    y, y_plain = dice32(x), reference_dice(plain, x_plain, batch_stats)
    torch.testing.assert_close(y, y_plain.float(), rtol=1e-4, atol=1e-5)  # x - mean loses digits of x ~ 30
    if batch_stats:  # the statistics summed in double: as exact as float32 keeps them
        expected_mean = 0.8 * plain.running_mean + 0.2 * x_plain.detach().mean(0)
        expected_var = 0.8 * plain.running_var + 0.2 * x_plain.detach().var(0)
        torch.testing.assert_close(dice32.running_mean, expected_mean.float(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(dice32.running_var, expected_var.float(), rtol=1e-5, atol=1e-6)
    upstream = torch.randn(rows, width)
    (y * upstream).sum().backward()
    (y_plain * upstream.double()).sum().backward()
    torch.testing.assert_close(x.grad, x_plain.grad.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dice32.alpha.grad, plain.alpha.grad.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch_stats", [True, False])
def test_dice_gradcheck_in_float64(batch_stats: bool) -> None:
    torch.manual_seed(3)
    x = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    alpha = torch.rand(6, dtype=torch.float64, requires_grad=True)
    running = torch.randn(6, dtype=torch.float64), torch.rand(6, dtype=torch.float64) + 0.5

    def run(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        # with batch statistics, dice() takes those of this x (no gradient) and differentiates through them
        mean, var = (x.detach().mean(0), x.detach().var(0, unbiased=False)) if batch_stats else running
        return dice(x, alpha, mean, torch.rsqrt(var + 1e-8), batch_stats)

    assert torch.autograd.gradcheck(run, (x, alpha))


def test_dice_kernel_matches_the_row_block_path_at_any_thread_count() -> None:
    torch.manual_seed(4)
    dice32 = Dice(40).train()
    randomize(dice32, 4)
    x = torch.randn(5000, 40) * 3 + 1
    threads = torch.get_num_threads()
    outputs = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            leaf = x.clone().requires_grad_()
            y = dice32(leaf)
            y.backward(torch.ones_like(y))
            outputs.append((y.detach(), leaf.grad, dice32.alpha.grad.clone()))
            dice32.alpha.grad = None
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*outputs):
        torch.testing.assert_close(one, two, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("activation", ["dice", "prelu"])
def test_local_activation_unit_matches_the_concat_formula(softmax: bool, training: bool, activation: str) -> None:
    torch.manual_seed(2)
    batch, length, dim = 700, 30, 4  # about 10,000 real positions: several eval blocks of width 16
    assert batch * length // 2 > EVAL_BLOCK_ELEMENTS // 16
    unit = LocalActivationUnit(dim, hidden=(16, 8), activation=activation, softmax=softmax).double().train(training)
    randomize(unit, 2)
    plain = LocalActivationUnit(dim, hidden=(16, 8), activation=activation, softmax=softmax).double().train(training)
    plain.load_state_dict(unit.state_dict())
    lengths = torch.randint(0, length + 1, (batch,))
    mask = torch.arange(length)[None, :] < lengths[:, None]
    history = torch.randn(batch, length, dim, dtype=torch.float64, requires_grad=True)
    candidate = torch.randn(batch, dim, dtype=torch.float64, requires_grad=True)
    weights = unit(history, candidate, mask)
    expected = reference_scores(plain, history, candidate, mask)
    torch.testing.assert_close(weights, expected)
    upstream = torch.randn_like(weights)
    (weights * upstream).sum().backward()
    ours = grads([history, candidate, *unit.parameters()])
    (expected * upstream).sum().backward()
    for got, want in zip(ours, grads([history, candidate, *plain.parameters()])):
        torch.testing.assert_close(got, want)


def test_local_activation_unit_without_hidden_layers() -> None:
    torch.manual_seed(3)
    unit = LocalActivationUnit(3, hidden=()).double()
    mask = torch.tensor([[True, False], [True, True]])
    history, candidate = torch.randn(2, 2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(unit(history, candidate, mask), reference_scores(unit, history, candidate, mask))


@pytest.mark.parametrize("training", [True, False])
def test_din_forward_and_backward_match_the_padded_formula(training: bool) -> None:
    """DIN's logits and every gradient against the interest written over the padded history."""
    torch.manual_seed(4)
    batch, length = 300, 12
    shapes = EmbeddingShapes(pooled={"item": 4, "cat": 2, "user": 3},
                             sequences={"hist_item": (length, 4), "hist_cat": (length, 2)}, num_dense=2)  # fmt: skip
    config = DINConfig(history={"hist_item": "item", "hist_cat": "cat"}, attention_hidden=(8, 4), hidden=(16,))
    model = DIN(shapes, config).double().train(training)
    randomize(model, 4)
    lengths = torch.randint(0, length + 1, (batch,))
    masks = {"hist_item": torch.arange(length)[None, :] < lengths[:, None]}
    masks["hist_cat"] = masks["hist_item"] & (torch.rand(batch, length) > 0.1)  # a position counts when real in both
    leaves = {
        "item": torch.randn(batch, 4), "cat": torch.randn(batch, 2), "user": torch.randn(batch, 3),
        "hist_item": torch.randn(batch, length, 4), "hist_cat": torch.randn(batch, length, 2), "dense": torch.randn(batch, 2),
    }  # fmt: skip
    leaves = {k: v.double().requires_grad_() for k, v in leaves.items()}

    def embeddings() -> Embeddings:
        return Embeddings(pooled={k: leaves[k] for k in ("item", "cat", "user")},
                          sequences={k: leaves[k] for k in ("hist_item", "hist_cat")}, masks=masks)  # fmt: skip

    logits = model(embeddings(), leaves["dense"])
    upstream = torch.randn_like(logits)
    (logits * upstream).sum().backward()
    ours = grads([*leaves.values(), *model.parameters()])

    plain = DIN(shapes, config).double().train(training)
    plain.load_state_dict(model.state_dict())
    emb = embeddings()
    mask = masks["hist_item"] & masks["hist_cat"]
    history = torch.cat([emb.sequences["hist_item"], emb.sequences["hist_cat"]], dim=-1)
    candidate = torch.cat([emb.pooled["item"], emb.pooled["cat"]], dim=-1)
    weights = reference_scores(plain.attention, history, candidate, mask)
    interest = (weights.unsqueeze(-1) * history).sum(1)
    flat = torch.cat([emb.pooled["item"], emb.pooled["cat"], emb.pooled["user"], leaves["dense"], interest], dim=1)
    x = flat
    for layer in plain.mlp.layers:
        x = reference_dice(layer, x, training) if isinstance(layer, Dice) else layer(x)
    expected = plain.logit(x).squeeze(-1)
    torch.testing.assert_close(logits, expected)
    (expected * upstream).sum().backward()
    for got, want in zip(ours, grads([*leaves.values(), *plain.parameters()])):
        torch.testing.assert_close(got, want)


def test_din_state_dict_keys_are_unchanged() -> None:
    """Saved artifacts keep loading: the parameter and buffer names of the layers as they were."""
    shapes = EmbeddingShapes(pooled={"item": 4}, sequences={"hist": (5, 4)}, num_dense=0)
    keys = set(DIN(shapes, DINConfig(history={"hist": "item"}, attention_hidden=(8,), hidden=(8,))).state_dict())
    assert keys == {
        "attention.mlp.layers.0.weight", "attention.mlp.layers.0.bias", "attention.mlp.layers.1.alpha",
        "attention.mlp.layers.1.running_mean", "attention.mlp.layers.1.running_var", "attention.score.weight",
        "attention.score.bias", "mlp.layers.0.weight", "mlp.layers.0.bias", "mlp.layers.1.alpha",
        "mlp.layers.1.running_mean", "mlp.layers.1.running_var", "logit.weight", "logit.bias",
    }  # fmt: skip
