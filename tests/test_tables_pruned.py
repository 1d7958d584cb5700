"""OptEmbed pruned tables, the evolutionary dim search and the compact export."""

from __future__ import annotations

import doctest
import json
import random

import pytest
import torch
from safetensors.torch import load_file, save_file
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables import compact, evolution, pruned
from recsys_embed.tables.base import TableOptimizer
from recsys_embed.tables.compact import CompactTables
from recsys_embed.tables.evolution import EvolutionConfig, crossover, evolutionary_search, mutate
from recsys_embed.tables.pruned import OptEmbedConfig, PrunedTables, straight_through_step

SCHEMA = Schema(
    [
        FeatureSpec("item_id", embedding_dim=8),
        FeatureSpec("hist", kind="sequence", table="item_id", max_len=3, embedding_dim=8),
        FeatureSpec("cat", embedding_dim=4),
    ]
)
ROWS = {"item_id": 50, "cat": 20}


def make_kjt(items: list[int], hists: list[list[int]], cats: list[int]) -> KeyedJaggedTensor:
    lengths = [1] * len(items) + [len(h) for h in hists] + [1] * len(cats)
    values = items + [i for h in hists for i in h] + cats
    return KeyedJaggedTensor.from_lengths_sync(["item_id", "hist", "cat"], torch.tensor(values), torch.tensor(lengths))


def every_id_kjt() -> KeyedJaggedTensor:
    """Every item and cat id once, plus histories that are empty, short and longer than max_len."""
    items = list(range(ROWS["item_id"]))
    hists = [[(3 * b + k) % ROWS["item_id"] for k in range(b % 5)] for b in items]
    cats = [b % ROWS["cat"] for b in items]
    return make_kjt(items, hists, cats)


def pruned_tables(**config: float) -> PrunedTables:
    return PrunedTables(SCHEMA, ROWS, OptEmbedConfig(**config), TableOptimizer("sgd", lr=0.1))


def assert_same_outputs(a, b) -> None:
    assert a.pooled.keys() == b.pooled.keys() and a.sequences.keys() == b.sequences.keys()
    for name in a.pooled:
        assert torch.equal(a.pooled[name], b.pooled[name]), name
    for name in a.sequences:
        assert torch.equal(a.sequences[name], b.sequences[name]), name
        assert torch.equal(a.masks[name], b.masks[name]), name


@pytest.mark.parametrize("module", [pruned, compact, evolution])
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_straight_through_gradient_values() -> None:
    x = torch.tensor([0.0, 0.2, 0.4, 0.5, 1.0, 1.5, -0.2, -0.7, -1.5], requires_grad=True)
    y = straight_through_step(x)
    y.sum().backward()
    assert y.tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0]
    assert x.grad.tolist() == pytest.approx([2.0, 1.2, 0.4, 0.4, 0.4, 0.0, 1.2, 0.4, 0.0])


def test_raising_thresholds_prunes_monotonically_more_rows() -> None:
    tables = pruned_tables().eval()
    kjt = every_id_kjt()
    previous = None
    counts = []
    for value in torch.linspace(0.0, 0.4, 9):
        with torch.no_grad():
            tables.thresholds.fill_(float(value))
        kept = tables.row_masks()["item_id"]
        zero_rows = (tables(kjt).pooled["item_id"] == 0).all(1)  # row b reads id b
        assert torch.equal(~zero_rows, kept)
        if previous is not None:
            assert not (kept & ~previous).any()  # nothing comes back when the threshold rises
        previous = kept
        counts.append(int(kept.sum()))
    assert counts[0] == ROWS["item_id"] and counts[-1] == 0 and len(set(counts)) > 3


def test_pruned_rows_still_learn_through_the_straight_through_gradient() -> None:
    tables = PrunedTables(SCHEMA, ROWS, OptEmbedConfig(sample_dims=False), TableOptimizer("sgd", lr=1.0))
    weight = tables.tables.table_weights()["item_id"]
    norm = float(weight[5].abs().sum())
    kjt = make_kjt([5, 6], [[], []], [0, 0])
    with torch.no_grad():
        tables.thresholds[0] = norm + 0.5  # row 5 pruned but within the gradient window
    before = weight.clone()
    out = tables(kjt)
    assert (out.pooled["item_id"][0] == 0).all()
    out.pooled["item_id"][0].sum().backward()
    assert not torch.equal(weight[5], before[5])  # the fused kernel applied the row gradient
    assert torch.equal(weight[6], before[6])
    assert tables.thresholds.grad[0] != 0


def train_thresholds(alpha: float, steps: int = 60) -> torch.Tensor:
    torch.manual_seed(0)
    tables = pruned_tables(alpha=alpha, threshold_lr=0.05, sample_dims=False)
    optimizer = torch.optim.SGD(tables.dense_parameters())
    items = torch.randint(0, ROWS["item_id"], (64,))
    labels = (items % 2).float()  # learnable from the item rows
    for _ in range(steps):
        out = tables(make_kjt(items.tolist(), [[] for _ in items], [0] * 64))
        logits = out.pooled["item_id"].sum(1) * 10
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels) + tables.regularization_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return tables.thresholds.detach()


def test_regularization_pushes_thresholds_up() -> None:
    with_reg, without = train_thresholds(alpha=0.5), train_thresholds(alpha=0.0)
    assert (with_reg > 0.05).all()
    assert (with_reg > without + 0.05).all()


def test_supernet_samples_prefix_dims_per_sample_and_field() -> None:
    tables = pruned_tables(threshold_init=-10.0).train()  # every row kept
    kjt = make_kjt([b % 50 for b in range(64)], [[b % 50] * 3 for b in range(64)], [b % 20 for b in range(64)])
    out = tables(kjt)
    for x in [out.pooled["item_id"], out.pooled["cat"], out.sequences["hist"]]:
        nonzero = x != 0
        assert torch.equal(nonzero, nonzero.cummin(-1).values)  # a prefix of each row
    item_dims = (out.pooled["item_id"] != 0).sum(1)
    assert torch.equal((out.sequences["hist"] != 0).sum(-1), item_dims[:, None].expand(64, 3))  # one dim per field
    assert len(set(item_dims.tolist())) > 3 and item_dims.min() >= 1 and item_dims.max() <= 8
    assert not torch.equal(item_dims, (out.pooled["cat"] != 0).sum(1))  # fields draw independently
    assert (tables.eval()(kjt).pooled["item_id"] != 0).all()  # eval: full width


def test_evolutionary_search_finds_a_separable_optimum() -> None:
    found = 0
    for seed in range(10):
        rng = random.Random(seed)
        target = [rng.randint(1, 8) for _ in range(4)]
        calls = []

        def evaluate(dims: list[int]) -> float:
            calls.append(tuple(dims))
            return -sum(abs(d - t) for d, t in zip(dims, target))

        result = evolutionary_search(evaluate, [8] * 4, EvolutionConfig(seed=seed))
        assert len(calls) == len(set(calls)) == result.evaluations  # each candidate scored once
        assert result.history == sorted(result.history) and result.history[-1] == result.score
        assert -result.score <= 2
        found += result.dims == target
    assert found >= 8


def test_search_children_are_copies() -> None:
    rng = random.Random(0)
    parent = [3, 3, 3, 3, 3, 3]
    child = mutate(parent, [8] * 6, prob=1.0, min_dim=1, rng=rng)
    child[0] = 99
    assert parent == [3] * 6
    assert mutate(parent, [8] * 6, prob=0.0, min_dim=1, rng=rng) is not parent
    first, second = [1] * 30, [8] * 30
    mixed = crossover(first, second, rng)
    assert set(mixed) == {1, 8} and first == [1] * 30 and second == [8] * 30
    # an evaluate that scribbles on its argument cannot corrupt the population
    target = [2, 7, 4]
    clean = evolutionary_search(lambda d: -sum(abs(a - b) for a, b in zip(d, target)), [8] * 3)

    def scribbling(dims: list[int]) -> float:
        score = -sum(abs(a - b) for a, b in zip(dims, target))
        dims[:] = [1] * len(dims)
        return score

    assert evolutionary_search(scribbling, [8] * 3) == clean


def test_search_dims_scores_the_table_served_at_each_candidate() -> None:
    tables = pruned_tables(threshold_init=-10.0).eval()
    kjt = every_id_kjt()

    def validate() -> float:  # best when item_id serves 5 columns and cat 2, read off the outputs
        out = tables(kjt)
        served = [int((out.pooled[f] != 0).sum(1).max()) for f in ("item_id", "cat")]
        return -abs(served[0] - 5) - abs(served[1] - 2)

    result = tables.search_dims(validate, EvolutionConfig(rounds=10))
    assert result.dims == [5, 2] and tables.dims == [5, 2] and result.score == 0
    assert "item_id" in tables.summary() and "cat" in tables.compact().summary()


def test_compact_export_equals_the_masked_table() -> None:
    tables = pruned_tables().eval()
    with torch.no_grad():
        tables.thresholds.copy_(torch.tensor([0.2, 0.1]))
    tables.use_dims([3, 2])
    kjt = every_id_kjt()
    masks = tables.row_masks()
    assert 0 < int(masks["item_id"].sum()) < ROWS["item_id"] and 0 < int(masks["cat"].sum()) < ROWS["cat"]
    served = tables.compact()
    assert_same_outputs(served(kjt), tables(kjt))
    # remapped ids: a kept id reads its own row, trimmed; a pruned id reads zeros
    weight = tables.tables.table_weights()["item_id"]
    kept_id = int(masks["item_id"].nonzero()[0])
    pruned_id = int((~masks["item_id"]).nonzero()[0])
    out = served(make_kjt([kept_id, pruned_id], [[], []], [0, 0])).pooled["item_id"]
    assert torch.equal(out[0, :3], weight[kept_id, :3]) and (out[0, 3:] == 0).all() and (out[1] == 0).all()
    stored = int(masks["item_id"].sum()) * 3 + int(masks["cat"].sum()) * 2
    assert served.num_parameters() == stored
    assert served.memory_bytes() == stored * 4 + sum(int(m.sum()) for m in masks.values()) * 4
    assert served.memory_bytes() < tables.memory_bytes()
    assert served.shapes().pooled == tables.shapes().pooled


def test_retrain_restarts_from_initial_weights_with_frozen_masks_and_dims() -> None:
    tables = pruned_tables()
    initial = {t: w.clone() for t, w in tables.tables.table_weights().items()}
    kjt = every_id_kjt()
    tables(kjt).pooled["item_id"].sum().backward()  # supernet training moves the weights
    assert not torch.equal(tables.tables.table_weights()["item_id"], initial["item_id"])
    with torch.no_grad():
        tables.thresholds.fill_(0.2)
    masks = tables.row_masks()
    retrained = tables.retrain([4, 2]).train()
    for name, weight in retrained.tables.table_weights().items():
        assert torch.equal(weight, initial[name])
    assert all(torch.equal(retrained.row_masks()[t], masks[t]) for t in masks)
    assert retrained.dense_parameters() == [] and float(retrained.regularization_loss()) == 0.0
    with pytest.raises(ValueError, match="fixed after retrain"):
        retrained.use_dims([8, 4])
    for _ in range(3):  # masks stay frozen while training: thresholds no longer apply
        out = retrained(kjt)
        (out.pooled["item_id"].pow(2).sum() * -1).backward()
    out = retrained(kjt)
    assert torch.equal((out.pooled["item_id"] != 0).any(1), masks["item_id"])
    assert (out.pooled["item_id"][:, 4:] == 0).all() and (out.pooled["cat"][:, 2:] == 0).all()
    assert_same_outputs(retrained.eval().compact()(kjt), retrained(kjt))


def train_step(tables: PrunedTables, kjt: KeyedJaggedTensor, seed: int) -> None:
    torch.manual_seed(seed)  # the same sampled dims
    out = tables(kjt)
    (out.pooled["cat"].pow(2).sum() - out.sequences["hist"].sum() + out.pooled["item_id"].sum()).backward()


@pytest.mark.parametrize("frozen", [False, True])
def test_export_state_round_trip_is_exact(tmp_path, frozen: bool) -> None:
    tables = PrunedTables(SCHEMA, ROWS, OptEmbedConfig(alpha=0.01), TableOptimizer("rowwise_adagrad", lr=0.1))
    kjt = every_id_kjt()
    train_step(tables, kjt, seed=1)
    with torch.no_grad():
        tables.thresholds.copy_(torch.tensor([0.17, 0.09]))
    tables.use_dims([5, 3])
    if frozen:
        tables = tables.retrain()
    tensors, config = tables.export_state()
    save_file(tensors, tmp_path / "tables.safetensors")
    (tmp_path / "tables.json").write_text(json.dumps(config))
    loaded = PrunedTables.from_state(SCHEMA, load_file(tmp_path / "tables.safetensors"), json.loads((tmp_path / "tables.json").read_text()))
    assert loaded.frozen == frozen and loaded.dims == [5, 3]
    assert torch.equal(loaded.thresholds, tables.thresholds)
    assert_same_outputs(loaded.eval()(kjt), tables.eval()(kjt))
    for layout in (loaded, tables):  # the fused optimizer state came along: training goes on identically
        train_step(layout.train(), kjt, seed=2)
    assert_same_outputs(loaded.eval()(kjt), tables.eval()(kjt))

    served = tables.compact()
    tensors, config = served.export_state()
    save_file(tensors, tmp_path / "compact.safetensors")
    again = CompactTables.from_state(SCHEMA, load_file(tmp_path / "compact.safetensors"), json.loads(json.dumps(config)))
    assert_same_outputs(again(kjt), served(kjt))
    assert again.memory_bytes() == served.memory_bytes()


def test_bad_inputs_raise_clear_errors() -> None:
    tables = pruned_tables()
    with pytest.raises(ValueError, match="'cat': categorical bags must hold at most one id"):
        tables(KeyedJaggedTensor.from_lengths_sync(["item_id", "hist", "cat"], torch.tensor([1, 2, 3]), torch.tensor([1, 0, 2])))
    with pytest.raises(IndexError, match="'item_id'"):
        tables.compact()(make_kjt([50], [[]], [0]))
    with pytest.raises(ValueError, match="one dim in"):
        tables.use_dims([9, 4])
    tensors, config = tables.export_state()
    with pytest.raises(ValueError, match="describes layout .* not 'pruned'"):
        PrunedTables.from_state(SCHEMA, tensors, {**config, "layout": "compact"})
    with pytest.raises(ValueError, match="no tensor"):
        PrunedTables.from_state(SCHEMA, {k: v for k, v in tensors.items() if k != "thresholds"}, config)
    with pytest.raises(ValueError, match="max_dims"):
        evolutionary_search(lambda d: 0.0, [])
