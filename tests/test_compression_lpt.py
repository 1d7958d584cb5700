"""Low-precision training (LPT / ALPT, ``recsys_embed.compression.lpt``): the update rule against a
hand computation (stochastic rounding's expectation over many draws), ALPT's step gradient, the
rounding error at init, determinism, exact accounting, sizing errors, updates once per trainer step
and never in evaluation, a training run as good as the exact table's, and the README's config.
The generic method tests (shapes, artifacts, ...) run it through ``test_compression_methods.py``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.batch import Batch
from recsys_embed.compression import CompressedTables, LowPrecision, MethodConfigError
from recsys_embed.compression.lpt import quantize
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.jobs.ranking_model import RankingModel
from recsys_embed.jobs.trainer import Trainer, TrainerConfig
from recsys_embed.models import MLP, MLPConfig
from recsys_embed.tables import TableOptimizer


def fill(method: LowPrecision, code: int) -> None:
    method.codes.fill_(code)


def test_shapes_dtypes_and_the_step() -> None:
    int8 = LowPrecision.from_options(50, 8, {}, None)
    int16 = LowPrecision.from_options(50, 8, {"bits": 16, "max_abs": 2.0}, None)
    assert int8.codes.dtype == torch.int8 and int16.codes.dtype == torch.int16
    assert float(int8.step) == pytest.approx(0.5 / 127) and float(int16.step) == pytest.approx(2 / 32767)
    assert int8.lookup(torch.tensor([0, 49, 49])).shape == (3, 8)
    assert int8.lookup_many([torch.tensor([1, 2]), torch.tensor([3])])[1].shape == (1, 8)


def test_sgd_update_is_unbiased_and_sums_duplicates() -> None:
    """Every row starts at code 10 and gets the same gradient twice (a duplicated id): the codes
    land on the two grid points around ``x = (10 Δ - 2 η g) / Δ`` and average to ``x``."""
    n, dim, lr = 20_000, 4, 0.01
    lpt = LowPrecision.from_options(n, dim, {"optimizer": "sgd", "lr": lr}, None)
    fill(lpt, 10)
    step = float(lpt.step)
    g = torch.tensor([0.1, -0.05, 0.33, 0.0])
    ids = torch.cat([torch.arange(n), torch.arange(n)])
    (lpt.lookup(ids) * g).sum().backward()
    x = (10 * step - lr * 2 * g) / step
    codes = lpt.codes.float()
    assert torch.allclose(codes.mean(0), x, atol=0.02), (codes.mean(0), x)
    assert bool(((codes == x.floor()) | (codes == x.floor() + 1)).all())
    assert bool((codes[:, 3] == 10).all())  # no gradient: the row stays on its grid point


def test_rowwise_adagrad_update_against_a_hand_computation() -> None:
    n, dim = 20_000, 4
    lpt = LowPrecision.from_options(n, dim, {}, None)  # rowwise Adagrad at the table optimizer's lr
    lpt.use_table_optimizer(TableOptimizer("rowwise_adagrad", lr=0.02, eps=1e-8))
    fill(lpt, -3)
    step = float(lpt.step)
    g = torch.tensor([0.2, -0.1, 0.05, 0.4])
    (lpt.lookup(torch.arange(n)) * g).sum().backward()
    momentum = g.pow(2).mean()
    assert torch.allclose(lpt.momentum, momentum.expand(n))
    x = (-3 * step - 0.02 * g / (momentum.sqrt() + 1e-8)) / step
    assert torch.allclose(lpt.codes.float().mean(0), x, atol=0.02)


def test_codes_clip_to_the_int_range() -> None:
    lpt = LowPrecision.from_options(100, 4, {"optimizer": "sgd", "lr": 10.0}, None)
    (lpt.lookup(torch.arange(100)) * torch.tensor([-1.0, 1.0, 0.0, 0.0])).sum().backward()
    assert lpt.codes[:, 0].eq(127).all() and lpt.codes[:, 1].eq(-128).all()


def test_alpt_step_gradient_is_lsq_and_reaches_only_read_rows() -> None:
    """Rows at the top code pushed further up clip: LSQ's ∂ŵ/∂Δ is Q_P, so ∂L/∂s = Δ Σ_d G_d Q_P."""
    alpt = LowPrecision.from_options(10, 4, {"learned_step": True, "optimizer": "sgd", "lr": 1.0}, None)
    fill(alpt, 127)
    g = torch.tensor([[-1.0, -2.0, -0.5, -0.25], [-1.0, -1.0, -1.0, -1.0]])
    (alpt.lookup(torch.tensor([2, 7])) * g).sum().backward()
    step = alpt.log_step.detach().exp()
    expected = torch.zeros(10)
    expected[[2, 7]] = step[[2, 7]] * g.sum(1) * 127
    assert torch.allclose(alpt.log_step.grad, expected)
    # inside the range: Σ_d G_d (q' - x), the rounding residual of the rows just re-quantized
    inside = LowPrecision.from_options(10, 4, {"learned_step": True, "optimizer": "sgd", "lr": 0.001}, None)
    fill(inside, 5)
    before = inside.log_step.detach().exp()[3] * 5
    g = torch.tensor([0.3, -0.2, 0.1, 0.7])
    (inside.lookup(torch.tensor([3])) * g).sum().backward()
    step = inside.log_step.detach().exp()[3]
    x = (before - 0.001 * g) / step
    residual = inside.codes[3].float() - x
    assert float(inside.log_step.grad[3]) == pytest.approx(float(step * (g * residual).sum()), rel=1e-4)
    assert inside.log_step.grad.count_nonzero() == 1


def test_nearest_rounding_error_bound_at_init() -> None:
    w = torch.linspace(-1, 1, 1001)[:, None] * torch.tensor([1.0, -0.5, 0.3])
    step = 1 / 127
    assert bool(((w - step * quantize(w / step, 8)).abs() <= step / 2 + 1e-7).all())
    torch.manual_seed(0)
    reference = torch.empty(500, 8).uniform_(-0.05, 0.05)  # the method's first draw
    torch.manual_seed(0)
    lpt = LowPrecision(500, 8, max_abs=0.5)
    step = float(lpt.step)
    assert bool(((reference - lpt.rows(torch.arange(500))).abs() <= step / 2 + 1e-7).all())


def _train(lpt_seed: int, steps: int = 5) -> LowPrecision:
    torch.manual_seed(lpt_seed)
    lpt = LowPrecision.from_options(300, 8, {"learned_step": True}, None)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(0, 300, (64,), generator=g)
        lpt.lookup(ids).pow(2).sum().backward()
    return lpt


def test_same_seed_same_codes() -> None:
    a, b, c = _train(3), _train(3), _train(4)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.log_step.grad, b.log_step.grad) and torch.equal(a.rng, b.rng)
    assert not torch.equal(a.codes, c.codes)
    assert int(a.rng[1]) == 5


@pytest.mark.parametrize("options, expected_bytes, weights", [
    ({}, 1000 * 16 + 4 + 4 * 1000 + 16, 4000 + 1),
    ({"learned_step": True}, 1000 * 16 + 1000 * 4 * 3 + 4 * 1000 + 16, 4000 + 1000),
    ({"bits": 16, "optimizer": "sgd"}, 2 * 1000 * 16 + 4 + 16, 8000 + 1),
])  # fmt: skip
def test_memory_accounting_is_exact(options: dict, expected_bytes: int, weights: int) -> None:
    lpt = LowPrecision.from_options(1000, 16, options, None)
    assert lpt.memory_bytes() == expected_bytes and lpt.num_parameters() == weights
    assert LowPrecision.from_options(1000, 16, options, budget=weights).num_parameters() == weights


def test_sizing_and_option_errors() -> None:
    with pytest.raises(MethodConfigError, match=r"need at least 4001 weights \(16004 bytes, 0\.250 of the exact table\), the budget allows 3200"):
        LowPrecision.from_options(1000, 16, {}, budget=3200)
    with pytest.raises(MethodConfigError, match="with a learned step per row need at least 5000 weights"):
        LowPrecision.from_options(1000, 16, {"learned_step": True}, budget=4001)
    with pytest.raises(MethodConfigError, match=r"bits must be one of \[8, 16\], got 4"):
        LowPrecision.from_options(10, 4, {"bits": 4}, None)
    with pytest.raises(MethodConfigError, match=r"optimizer must be one of \['rowwise_adagrad', 'sgd'\], got 'adam'"):
        LowPrecision.from_options(10, 4, {"optimizer": "adam"}, None)
    with pytest.raises(MethodConfigError, match=r"unknown option\(s\) \['step'\]"):
        LowPrecision.from_options(10, 4, {"step": 0.1}, None)
    with pytest.raises(MethodConfigError, match="max_abs, lr and step_lr must be > 0"):
        LowPrecision.from_options(10, 4, {"lr": -1}, None)


SCHEMA = Schema([
    FeatureSpec("user_id", embedding_dim=8),
    FeatureSpec("item_id", embedding_dim=8),
    FeatureSpec("hist", kind="sequence", table="item_id", max_len=3, embedding_dim=8),
])  # fmt: skip
IDS = {"user_id": 50, "item_id": 200}


def _batches(count: int = 4) -> list[Batch]:
    g = torch.Generator().manual_seed(2)
    out = []
    for _ in range(count):
        users, items = torch.randint(0, 50, (32,), generator=g), torch.randint(0, 200, (32,), generator=g)
        lengths = torch.randint(0, 4, (32,), generator=g)
        hist = torch.randint(0, 200, (int(lengths.sum()),), generator=g)
        ones = torch.ones(32, dtype=torch.int64)
        kjt = KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id", "hist"], torch.cat([users, items, hist]), torch.cat([ones, ones, lengths]))
        out.append(Batch(kjt, torch.zeros(32, 0), (items % 2).float()))
    return out


def test_trainer_updates_once_per_step_and_evaluation_never() -> None:
    """item_id and hist read one group: one update per optimizer step; evaluation leaves the codes."""
    torch.manual_seed(0)
    tables = CompressedTables.from_options(SCHEMA, IDS, {"item_id": {"method": "lpt", "learned_step": True}})
    method = tables.methods["item_id"]
    model = RankingModel(tables, MLP(tables.shapes(0), MLPConfig(hidden=(8,), dropout=0.0)))
    groups = model.dense_param_groups(0.01, 0.1)  # the log steps: their own lr, no weight decay
    assert [(g["lr"], g["weight_decay"]) for g in groups if any(p is method.log_step for p in g["params"])] == [(1e-3, 0.0)]
    Trainer(model, TrainerConfig(max_steps=3, progress=False)).fit(_batches())
    assert int(method.rng[1]) == 3
    codes = method.codes.clone()
    model.evaluate(_batches(2))
    with torch.no_grad():
        model.loss(_batches(1)[0])
    model.eval()
    model.loss(_batches(1)[0])[0].backward()  # eval mode: gradients, but no row update
    assert torch.equal(method.codes, codes) and int(method.rng[1]) == 3


def _final_loss(item: dict) -> float:
    """The generic training task (per-item labels, 200 popular ids) with the item group stored by ``item``."""
    torch.manual_seed(0)
    tables = CompressedTables.from_options(SCHEMA, IDS, {"item_id": item})
    head = torch.nn.Linear(8, 1)
    dense = [p for p in tables.parameters() if p not in set(tables.fused_parameters())]
    opt = torch.optim.Adam([*head.parameters(), *dense], lr=0.01)
    g = torch.Generator().manual_seed(5)
    label_of = (torch.rand(IDS["item_id"], generator=g) < 0.5).float()
    losses = []
    for _ in range(200):
        items = torch.randint(0, IDS["item_id"], (128,), generator=g)
        kjt = KeyedJaggedTensor.from_lengths_sync(
            ["user_id", "item_id", "hist"], torch.cat([torch.zeros_like(items), items]),
            torch.cat([torch.ones(256, dtype=torch.int64), torch.zeros(128, dtype=torch.int64)]),
        )
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(tables(kjt).pooled["item_id"]).squeeze(1), label_of[items])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return sum(losses[-20:]) / 20


def test_training_is_comparable_to_the_exact_table() -> None:
    exact = _final_loss({"method": "exact"})
    lpt, alpt = _final_loss({"method": "lpt"}), _final_loss({"method": "lpt", "learned_step": True})
    assert exact < 0.05 and lpt < exact + 0.02 and alpt < exact + 0.02, (exact, lpt, alpt)  # measured: 0.0081, 0.0082, 0.0082


def test_readme_config_builds() -> None:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "method: lpt" in b)
    compression = yaml.safe_load(block)["layout"]["compression"]
    schema = Schema([FeatureSpec(name, embedding_dim=16) for name in compression])
    tables = CompressedTables.from_options(schema, {name: 10_000 for name in compression}, compression)
    assert {m.method_name for m in tables.methods.values()} == {"lpt"}
    assert "int8 codes" in tables.summary()


def test_matryoshka_prefix_losses_update_once() -> None:
    from recsys_embed.tables import MatryoshkaTables

    torch.manual_seed(0)
    nested = MatryoshkaTables(CompressedTables.from_options(SCHEMA, IDS, {"item_id": {"method": "lpt"}}), prefixes=[4, 8])
    views = nested.training_views(nested(_batches(1)[0].sparse))
    sum(v.pooled["item_id"].pow(2).sum() + v.sequences["hist"].sum() for v in views).backward()
    assert int(nested.base.methods["item_id"].rng[1]) == 1
