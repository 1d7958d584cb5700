"""CTR models (DIN, AutoInt(+), MLP): shapes, masks, ablations, and that each learns a tiny
synthetic problem through real fused fbgemm tables."""

from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.models import DIN, MLP, AutoInt, AutoIntConfig, DINConfig, MLPConfig
from recsys_embed.models.layers import FlatInputs, masked_sum
from recsys_embed.tables.base import Embeddings, EmbeddingShapes, TableOptimizer
from recsys_embed.tables.per_feature import PerFeatureTables

SHAPES = EmbeddingShapes(
    pooled={"user_id": 6, "item_id": 4, "item_category": 3},
    sequences={"hist_item_id": (5, 4), "hist_item_category": (5, 3), "recent_query": (4, 6)},
    num_dense=2,
)
HISTORY = {"hist_item_id": "item_id", "hist_item_category": "item_category"}
SMALL_DIN = DINConfig(history=HISTORY, attention_hidden=(8,), hidden=(16, 8))


def random_embeddings(batch: int = 7, seed: int = 0) -> tuple[Embeddings, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 6, (batch,), generator=g)
    lengths[0] = 0  # a user without history
    emb = Embeddings()
    for name, dim in SHAPES.pooled.items():
        emb.pooled[name] = torch.randn(batch, dim, generator=g)
    for name, (length, dim) in SHAPES.sequences.items():
        emb.sequences[name] = torch.randn(batch, length, dim, generator=g)
        emb.masks[name] = torch.arange(length)[None, :] < lengths.clamp(max=length)[:, None]
    return emb, torch.randn(batch, SHAPES.num_dense, generator=g)


def scramble_masked(emb: Embeddings) -> Embeddings:
    """The same embeddings with every masked (padding) position replaced by large noise."""
    out = Embeddings(pooled=dict(emb.pooled), masks=dict(emb.masks))
    for name, seq in emb.sequences.items():
        seq = seq.clone()
        hidden = ~emb.masks[name]
        seq[hidden] = torch.randn(int(hidden.sum()), seq.shape[-1]) * 50
        out.sequences[name] = seq
    return out


def all_models() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [
        DIN(SHAPES, SMALL_DIN),
        DIN(SHAPES, replace(SMALL_DIN, activation="prelu", attention_activation="prelu", softmax=True)),
        DIN(SHAPES, replace(SMALL_DIN, attention=False)),
        AutoInt(SHAPES, AutoIntConfig(field_dim=4, num_layers=2, head_dim=4)),
        AutoInt(SHAPES, AutoIntConfig(field_dim=4, num_layers=2, head_dim=4, dnn=(8,))),
        MLP(SHAPES, MLPConfig(hidden=(16, 8), dropout=0.1)),
    ]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_logits_shape_and_masked_positions_do_not_matter(mode: str) -> None:
    emb, dense = random_embeddings()
    scrambled = scramble_masked(emb)
    for model in all_models():
        model.train(mode == "train")
        torch.manual_seed(1)  # same dropout draws for both calls
        out = model(emb, dense)
        torch.manual_seed(1)
        assert out.shape == (7,) and torch.isfinite(out).all(), type(model).__name__
        torch.testing.assert_close(model(scrambled, dense), out)


def test_din_attention_sees_the_real_history() -> None:
    emb, dense = random_embeddings()
    model = all_models()[0].eval()
    changed = Embeddings(pooled=emb.pooled, sequences=dict(emb.sequences), masks=emb.masks)
    changed.sequences["hist_item_id"] = emb.sequences["hist_item_id"] + 1.0
    has_history = emb.masks["hist_item_id"].any(1)
    diff = (model(changed, dense) - model(emb, dense)).abs()
    assert (diff[has_history] > 1e-6).all() and (diff[~has_history] == 0).all()


def test_din_softmax_changes_the_output() -> None:
    emb, dense = random_embeddings()
    torch.manual_seed(5)
    plain = DIN(SHAPES, SMALL_DIN).eval()
    torch.manual_seed(5)
    normalised = DIN(SHAPES, replace(SMALL_DIN, softmax=True)).eval()
    torch.testing.assert_close(dict(plain.state_dict()), dict(normalised.state_dict()))
    assert not torch.allclose(plain(emb, dense), normalised(emb, dense))


def test_din_sum_pooling_ablation_is_the_masked_sum_of_the_history() -> None:
    emb, dense = random_embeddings()
    model = DIN(SHAPES, replace(SMALL_DIN, attention=False)).eval()
    assert model.attention is None
    mask = emb.masks["hist_item_id"] & emb.masks["hist_item_category"]
    history = torch.cat([emb.sequences["hist_item_id"], emb.sequences["hist_item_category"]], dim=-1)
    expected = (history * mask[..., None]).sum(1)
    torch.testing.assert_close(model.interest(emb), expected)
    torch.testing.assert_close(model.interest(emb), masked_sum(history, mask))
    flat = FlatInputs(SHAPES, skip=HISTORY)(emb, dense)
    logits = model.logit(model.mlp(torch.cat([flat, expected], dim=1))).squeeze(-1)
    torch.testing.assert_close(model(emb, dense), logits)


def test_din_rejects_inconsistent_configs() -> None:
    with pytest.raises(ValueError, match="history is empty"):
        DIN(SHAPES, DINConfig())
    with pytest.raises(ValueError, match="'user_id'.*not a sequence"):
        DIN(SHAPES, DINConfig(history={"user_id": "item_id"}))
    with pytest.raises(ValueError, match="dim 4 but its candidate 'user_id' has dim 6"):
        DIN(SHAPES, DINConfig(history={"hist_item_id": "user_id"}))
    with pytest.raises(ValueError, match="share one max_len"):
        DIN(SHAPES, DINConfig(history={"hist_item_id": "item_id", "recent_query": "user_id"}))
    emb, dense = random_embeddings()
    del emb.pooled["item_id"]
    with pytest.raises(ValueError, match="pooled 'item_id'"):
        DIN(SHAPES, SMALL_DIN)(emb, dense)


def test_autoint_plus_differs_from_autoint_only_by_the_dnn_term() -> None:
    emb, dense = random_embeddings()
    config = AutoIntConfig(field_dim=4, num_layers=2, num_heads=2, head_dim=3)
    base = AutoInt(SHAPES, config).eval()
    plus = AutoInt(SHAPES, replace(config, dnn=(8, 4))).eval()
    missing, unexpected = plus.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("dnn.") for key in missing)
    dnn_term = plus.dnn(emb, dense)
    assert dnn_term.abs().max() > 0
    torch.testing.assert_close(plus(emb, dense), base(emb, dense) + dnn_term)


def test_autoint_fields_project_only_mismatched_dims_and_embed_numerics() -> None:
    emb, dense = random_embeddings()
    model = AutoInt(SHAPES, AutoIntConfig(field_dim=4, num_layers=1, head_dim=4)).eval()
    fields = model.fields(emb, dense)
    assert fields.shape == (7, 3 + 3 + 2, 4)
    torch.testing.assert_close(fields[:, 1], emb.pooled["item_id"])  # dim 4 == field_dim: unprojected
    torch.testing.assert_close(fields[:, 6], dense[:, :1] * model.numeric[0])
    with pytest.raises(ValueError, match=r"dense must be \[B, 2\]"):
        model(emb, dense[:, :1])


# --- learning: real fused tables + model, a few hundred steps on a tiny synthetic problem ---


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny ops run fastest on one thread (and do not crawl when other jobs share the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(
    schema: Schema,
    rows: dict[str, int],
    model_for: Callable[[EmbeddingShapes], torch.nn.Module],
    sample: Callable[[torch.Generator, int], tuple[KeyedJaggedTensor, torch.Tensor]],
    steps: int,
    lr: float = 0.01,
) -> tuple[float, float]:
    """Train tables + model; return the held-out logloss before and after."""
    torch.manual_seed(0)
    tables = PerFeatureTables(schema, rows, TableOptimizer("rowwise_adagrad", lr=0.1), init_scale=0.1)
    model = model_for(tables.shapes(num_dense=0))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    dense = torch.zeros(256, 0)
    held_out = sample(torch.Generator().manual_seed(123), 256)
    g = torch.Generator().manual_seed(7)

    def held_out_loss() -> float:
        model.eval()
        with torch.no_grad():
            logits = model(tables(held_out[0]), dense)
        model.train()
        return F.binary_cross_entropy_with_logits(logits, held_out[1]).item()

    before = held_out_loss()
    for _ in range(steps):
        kjt, labels = sample(g, 64)
        loss = F.binary_cross_entropy_with_logits(model(tables(kjt), dense[:64]), labels)
        optimizer.zero_grad()
        loss.backward()  # also updates the table rows (fused optimizer)
        optimizer.step()
    return before, held_out_loss()


ITEMS = 30  # item ids 2..31 (0 missing, 1 out-of-vocabulary)


def match_sample(g: torch.Generator, batch: int) -> tuple[KeyedJaggedTensor, torch.Tensor]:
    """Click iff the candidate item is in the user's history (the case DIN's attention is for)."""
    lengths = torch.randint(1, 6, (batch,), generator=g)
    history = torch.rand(batch, ITEMS, generator=g).argsort(1)[:, :5] + 2  # 5 distinct items per row
    real = torch.arange(5)[None, :] < lengths[:, None]
    labels = (torch.rand(batch, generator=g) < 0.5).float()
    from_history = history[torch.arange(batch), (torch.rand(batch, generator=g) * lengths).long()]
    outside = torch.rand(batch, ITEMS, generator=g).masked_fill(  # a random item not in the real history
        torch.zeros(batch, ITEMS + 2, dtype=torch.bool).scatter(1, history.masked_fill(~real, 0), True)[:, 2:], -1.0
    ).argmax(1) + 2
    candidates = torch.where(labels.bool(), from_history, outside)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["item_id", "hist_item_id"],
        values=torch.cat([candidates, history[real]]),
        lengths=torch.cat([torch.ones(batch, dtype=torch.int64), lengths]),
    )
    return kjt, labels


def test_din_learns_candidate_history_match(one_thread: None) -> None:
    schema = Schema(
        features=[
            FeatureSpec("item_id", embedding_dim=8),
            FeatureSpec("hist_item_id", kind="sequence", table="item_id", max_len=5, embedding_dim=8),
        ]
    )
    config = DINConfig(history={"hist_item_id": "item_id"}, attention_hidden=(16,), hidden=(32, 16))
    results = {
        attention: train(
            schema, {"item_id": ITEMS + 2}, lambda s: DIN(s, replace(config, attention=attention)), match_sample, 300
        )
        for attention in (True, False)
    }
    before, after = results[True]
    assert before > 0.65 and after < 0.1, results
    assert results[False][1] > 2 * after + 0.1, results  # sum pooling cannot tell which item matched


def xor_sample(g: torch.Generator, batch: int) -> tuple[KeyedJaggedTensor, torch.Tensor]:
    """Click iff exactly one of two fields has an odd id: a pure pairwise interaction."""
    a, b, noise = (torch.randint(2, 12, (batch,), generator=g) for _ in range(3))
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["a", "b", "noise"], values=torch.cat([a, b, noise]), lengths=torch.ones(3 * batch, dtype=torch.int64)
    )
    return kjt, ((a + b) % 2).float()


XOR_SCHEMA = Schema(
    features=[FeatureSpec("a", embedding_dim=8), FeatureSpec("b", embedding_dim=4), FeatureSpec("noise", embedding_dim=4)]
)
XOR_ROWS = {"a": 12, "b": 12, "noise": 12}


@pytest.mark.parametrize(
    "model_for",
    [
        lambda s: AutoInt(s, AutoIntConfig(field_dim=8, num_layers=2, num_heads=2, head_dim=8)),
        lambda s: AutoInt(s, AutoIntConfig(field_dim=8, num_layers=1, num_heads=2, head_dim=8, dnn=(32,))),
        lambda s: MLP(s, MLPConfig(hidden=(32, 16))),
    ],
    ids=["autoint", "autoint+", "mlp"],
)
def test_interaction_models_learn_xor(model_for: Callable[[EmbeddingShapes], torch.nn.Module], one_thread: None) -> None:
    before, after = train(XOR_SCHEMA, XOR_ROWS, model_for, xor_sample, steps=300)
    assert before > 0.65 and after < 0.1, (before, after)


def test_autoint_without_interacting_layers_cannot_learn_xor(one_thread: None) -> None:
    """The control for the test above: a linear model over the fields stays at chance."""
    _, after = train(XOR_SCHEMA, XOR_ROWS, lambda s: AutoInt(s, AutoIntConfig(num_layers=0)), xor_sample, steps=300)
    assert after > 0.6
