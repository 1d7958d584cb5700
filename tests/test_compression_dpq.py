"""The ``dpq`` method (DPQ-VQ codes and codebooks, MGQE tiers): nearest codewords, the straight-through
gradients, sizing by budget, exact accounting in training and served, and the served artifact.
The generic method tests (shapes, seeds, the layout round trip, learning) run it too:
``tests/test_compression_methods.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.artifacts import load_artifact, save_artifact
from recsys_embed.compression import CompressedTables, MethodConfigError, ProductQuantized
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables import layout_class


def method(seed: int = 0, **options: object) -> ProductQuantized:
    torch.manual_seed(seed)
    return ProductQuantized.from_options(500, 16, {"subspaces": 4, "codewords": 32, **options}, None)


def brute_force_codes(queries: torch.Tensor, books: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """``[N, S]``: per sub-space the nearest codeword by ``cdist``, among ``allowed[i]`` codewords of id i."""
    parts = queries.view(queries.shape[0], books.shape[0], -1).transpose(0, 1)  # [S, N, w]
    distances = torch.cdist(parts, books)  # [S, N, K]
    distances[:, torch.arange(books.shape[1])[None, :].expand(queries.shape[0], -1) >= allowed[:, None]] = float("inf")
    return distances.argmin(-1).T


def test_vectors_are_the_nearest_codewords_concatenated() -> None:
    pq = method()
    ids = torch.tensor([0, 7, 499, 7])
    out = pq.lookup(ids)
    assert out.shape == (4, 16) and pq.codebooks.shape == (4, 32, 4)
    codes = brute_force_codes(pq.queries.detach()[ids], pq.codebooks.detach(), torch.full((4,), 32))
    assert torch.equal(pq.codes_of(pq.queries.detach()[ids], ids), codes)
    expected = torch.cat([pq.codebooks.detach()[s, codes[:, s]] for s in range(4)], dim=1)
    assert torch.equal(out.detach(), expected)


def test_straight_through_gradients_reach_queries_and_codebooks() -> None:
    pq, ids = method(commitment=0.5), torch.tensor([3, 9, 3])
    out = pq.lookup(ids)
    grad = torch.randn(3, 16)
    (out * grad).sum().backward()
    q, c = pq.queries.detach()[ids], out.detach()
    aux = (q - c) * 2 / 3  # d/dq of mean ||q - c||^2 over the 3 lookups
    expected = torch.zeros(500, 16).index_add_(0, ids, grad + 0.5 * aux)
    assert torch.allclose(pq.queries.grad, expected, atol=1e-7)  # task gradient unchanged + beta x commitment
    codes = pq.codes_of(q, ids)
    books = torch.zeros(4 * 32, 4).index_add_(0, (codes + torch.arange(4) * 32).reshape(-1), (-aux).view(-1, 4))
    assert torch.allclose(pq.codebooks.grad, books.view(4, 32, 4), atol=1e-7)  # codebook loss only, used codewords only
    pq.queries.grad = None
    (pq.lookup(torch.tensor([3, 9])) * torch.tensor([[1.0] * 16, [0.0] * 16])).sum().backward()
    assert pq.queries.grad[9].abs().sum() == 0 and pq.queries.grad[3].abs().sum() > 0  # a zeroed (padding) slot: no VQ loss
    with torch.no_grad():
        assert torch.equal(pq.eval().lookup(ids), c)  # eval / no-grad: the same codewords, no estimator


def test_same_seed_same_codes() -> None:
    a, b, c = method(3), method(3), method(4)
    for pq in (a, b, c):
        pq.finalize()
    assert torch.equal(a.codes, b.codes) and torch.equal(a.codebooks, b.codebooks)
    assert not torch.equal(a.codebooks, c.codebooks)


def test_memory_accounting_training_and_served() -> None:
    pq = method()
    weights = 500 * 16 + 4 * 32 * 4  # queries + codebooks
    assert pq.num_parameters() == weights and pq.memory_bytes() == 4 * weights * 3  # with two Adam moments
    assert "served: 4,048 bytes of uint8 codes and codebooks (training also holds the queries [500, 16])" in pq.details()
    pq.finalize()
    assert sorted(pq.state_dict()) == ["codebooks", "codes"] and pq.codes.dtype == torch.uint8
    assert not list(pq.parameters()) and pq.memory_bytes() == 500 * 4 + 4 * 32 * 16  # codes + codebooks, exactly
    assert pq.num_parameters() == 500 + 32 * 16 and "(queries dropped)" in pq.details()


def test_budget_picks_the_most_code_bits_that_fit_and_names_its_minimum() -> None:
    pq = ProductQuantized.from_options(2000, 16, {}, budget=3200)  # 12,800 bytes
    assert (pq.subspaces, pq.codewords) == (4, 75)  # 2000 x 4 + 4 x 75 x 16 = 12,800
    pq.finalize()
    assert pq.memory_bytes() <= 4 * 3200 and pq.num_parameters() <= 3200
    assert ProductQuantized.from_options(2000, 16, {"codewords": 16}, budget=3200).subspaces == 4
    big = ProductQuantized.from_options(100_000, 16, {}, budget=0.5 * 100_000 * 16)
    assert (big.subspaces, big.codewords) == (16, 256)  # scalar codes, full byte
    with pytest.raises(MethodConfigError, match=r"2000 ids of dim 16 need at least 2128 bytes \(532 weights\)"):
        ProductQuantized.from_options(2000, 16, {}, budget=500)


def test_option_errors_and_the_clamp_of_codewords() -> None:
    with pytest.warns(UserWarning, match="300 codewords for 100 ids; clamped to 100"):
        assert ProductQuantized.from_options(100, 8, {"subspaces": 2, "codewords": 300}, None).codewords == 100
    assert ProductQuantized.from_options(100, 8, {"subspaces": 2}, None).codewords == 100  # the default 256, silently
    with pytest.raises(MethodConfigError, match=r"codewords must lie in \[1, 256\]"):
        ProductQuantized.from_options(1000, 8, {"subspaces": 2, "codewords": 300}, None)
    with pytest.raises(MethodConfigError, match="subspaces must divide dim 8"):
        ProductQuantized.from_options(1000, 8, {"subspaces": 3}, None)
    with pytest.raises(MethodConfigError, match="give either 'subspaces' or 'budget'"):
        ProductQuantized.from_options(1000, 8, {"subspaces": 2}, 100)
    with pytest.raises(MethodConfigError, match="need both 'tail_codewords' and 'frequent'"):
        ProductQuantized.from_options(1000, 8, {"subspaces": 2, "tail_codewords": 4}, None)
    with pytest.raises(MethodConfigError, match="tail_codewords <= codewords"):
        ProductQuantized.from_options(1000, 8, {"subspaces": 2, "codewords": 8, "tail_codewords": 16, "frequent": 10}, None)


def test_mgqe_tiers_give_frequent_ids_the_larger_codebook() -> None:
    pq = method(tail_codewords=4, frequent_fraction=0.2)
    assert pq.frequent == 100 and pq.state_config()["tail_codewords"] == 4
    ids = torch.arange(500)
    codes = pq.codes_of(pq.queries.detach(), ids)
    assert bool((codes[100:] < 4).all()) and bool((codes[:100] >= 4).any())
    allowed = torch.where(ids < 100, 32, 4)
    assert torch.equal(codes, brute_force_codes(pq.queries.detach(), pq.codebooks.detach(), allowed))
    pq.finalize()
    assert bool((pq.codes[100:] < 4).all())


def test_a_small_regression_learns() -> None:
    pq, ids = method(), torch.arange(64)
    target = torch.randn(64, 16) * 0.3
    opt = torch.optim.Adam(pq.parameters(), lr=0.01)
    losses = []
    for _ in range(200):
        loss = (pq.lookup(ids) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10]), (losses[:3], losses[-3:])


def test_served_artifact_holds_codes_and_codebooks_and_gives_the_same_vectors(tmp_path: Path) -> None:
    schema = Schema([FeatureSpec("item_id", embedding_dim=16),
                     FeatureSpec("hist", kind="sequence", table="item_id", max_len=3, embedding_dim=16)])  # fmt: skip
    torch.manual_seed(0)
    tables = CompressedTables.from_options(schema, {"item_id": 1000}, {"item_id": {"method": "dpq", "budget": 0.25}})
    kjt = KeyedJaggedTensor.from_lengths_sync(["item_id", "hist"], torch.tensor([5, 999, 5, 7, 8]), torch.tensor([1, 1, 2, 1]))
    opt = torch.optim.Adam(tables.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        tables(kjt).pooled["item_id"].pow(2).sum().backward()
        opt.step()
    before = tables.table_vectors("item_id")
    served = tables.serving_layout()
    assert torch.equal(served.table_vectors("item_id"), before)
    tensors, config = served.export_state()
    assert sorted(tensors) == ["method/item_id/codebooks", "method/item_id/codes"] and config["methods"]["item_id"]["serving"]
    save_artifact(tmp_path / "t", tensors, {"layout": config})
    tensors, manifest = load_artifact(tmp_path / "t")
    again = layout_class(manifest["layout"]["layout"]).from_state(schema, tensors, manifest["layout"])
    assert torch.equal(again.table_vectors("item_id"), before)
    with torch.no_grad():
        assert torch.equal(again(kjt).sequences["hist"], tables(kjt).sequences["hist"])
    assert again.group_bytes("item_id") == 1000 * again.methods["item_id"].subspaces + 4 * again.methods["item_id"].codewords * 16
