"""The models on a CUDA device give what they give on CPU (skipped without a GPU)."""

from collections.abc import Callable

import pytest
import torch

from recsys_embed.models import (
    DIN,
    MLP,
    AutoInt,
    AutoIntConfig,
    BERT4Rec,
    BERT4RecConfig,
    DINConfig,
    MLPConfig,
    Popularity,
    cloze_mask,
    mini_batch_aware_l2,
    rank_of,
    sample_negatives,
)
from recsys_embed.tables.base import Embeddings, EmbeddingShapes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")
SHAPES = EmbeddingShapes(pooled={"item_id": 4, "user_id": 6}, sequences={"hist_item_id": (5, 4)}, num_dense=2)


def embeddings(device: torch.device) -> tuple[Embeddings, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([0, 1, 3, 5, 2, 4])
    emb = Embeddings(
        pooled={f: torch.randn(6, d, generator=g) for f, d in SHAPES.pooled.items()},
        sequences={"hist_item_id": torch.randn(6, 5, 4, generator=g)},
        masks={"hist_item_id": torch.arange(5)[None, :] < lengths[:, None]},
    )
    dense = torch.randn(6, 2, generator=g)
    return Embeddings(
        pooled={k: v.to(device) for k, v in emb.pooled.items()},
        sequences={k: v.to(device) for k, v in emb.sequences.items()},
        masks={k: v.to(device) for k, v in emb.masks.items()},
    ), dense.to(device)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DIN(SHAPES, DINConfig(history={"hist_item_id": "item_id"}, hidden=(8,), attention_hidden=(8,))),
        lambda: DIN(SHAPES, DINConfig(history={"hist_item_id": "item_id"}, softmax=True, activation="prelu")),
        lambda: AutoInt(SHAPES, AutoIntConfig(field_dim=4, num_layers=2, head_dim=4, dnn=(8,))),
        lambda: MLP(SHAPES, MLPConfig(hidden=(8,))),
    ],
    ids=["din", "din-softmax-prelu", "autoint+", "mlp"],
)
def test_ctr_models_match_cpu(make: Callable[[], torch.nn.Module]) -> None:
    torch.manual_seed(0)
    model = make()
    cpu_out = model.train()(*embeddings(torch.device("cpu")))
    cuda_model = model.to(CUDA)
    cuda_out = cuda_model(*embeddings(CUDA))
    torch.testing.assert_close(cuda_out.cpu(), cpu_out, atol=1e-4, rtol=1e-4)
    cuda_out.sum().backward()
    assert all(p.grad is None or p.grad.device.type == CUDA.type for p in cuda_model.parameters())


def test_bert4rec_trains_and_ranks_on_cuda() -> None:
    torch.manual_seed(0)
    config = BERT4RecConfig(max_len=8, dim=16, num_layers=1, dropout=0.0)
    model = BERT4Rec(config, rows=52).to(CUDA)
    table = torch.randn(52, 16, device=CUDA, requires_grad=True)
    lengths = torch.randint(1, 9, (32,), device=CUDA)
    items = torch.randint(2, 52, (32, 8), device=CUDA).masked_fill(torch.arange(8, device=CUDA) >= lengths[:, None], 0)
    masked = cloze_mask(items != 0, 0.3, generator=torch.Generator().manual_seed(1))
    assert masked.device.type == CUDA.type
    model.cloze_loss(table[items], items != 0, masked, items, table).backward()
    assert table.grad.device.type == CUDA.type
    model.eval()
    history = items[:, :6].masked_fill(torch.arange(6, device=CUDA) >= lengths[:, None] - 1, 0)
    targets = torch.randint(2, 52, (32,), device=CUDA)
    with torch.no_grad():
        scores = model.score_next(table[history], history != 0, table)
        cpu_table = table.detach().cpu()
        cpu_scores = model.cpu().score_next(cpu_table[history.cpu()], history.cpu() != 0, cpu_table)
    torch.testing.assert_close(scores.cpu(), cpu_scores, atol=1e-4, rtol=1e-4)
    ranks = rank_of(scores, targets, exclude=history)
    assert ranks.device.type == CUDA.type and (ranks >= 1).all() and (ranks <= 50).all()
    popularity = Popularity(52).to(CUDA).fit(items)
    negatives = sample_negatives(
        targets, 52, 5, exclude=history, popularity=popularity.counts, generator=torch.Generator(CUDA).manual_seed(0)
    )
    assert negatives.device.type == CUDA.type
    assert rank_of(popularity.score_next(32), targets, negatives=negatives).device.type == CUDA.type


def test_mini_batch_aware_l2_on_cuda() -> None:
    rows = torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 0.0]], device=CUDA)
    penalty = mini_batch_aware_l2(rows, torch.tensor([5, 5, 2], device=CUDA), torch.tensor([5.0, 5.0, 3.0], device=CUDA))
    assert penalty.item() == pytest.approx(1.0 + 3.0)
