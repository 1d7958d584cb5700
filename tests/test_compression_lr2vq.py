"""LR²VQ (``lr2vq``): low-rank codes product-quantized to uint8 codes and projected up. Its math
against a direct computation, the codebook and commitment terms through the layout's
``regularization_loss``, sizing and its errors, exact accounting of both states, the served
artifact (codes, codebooks, projection only) and the error bound of :meth:`LowRankVQ.fit`.

The generic checks every method passes (layout shapes, seeds, round trip of the training state)
are in ``tests/test_compression_methods.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recsys_embed.artifacts import load_artifact, save_artifact
from recsys_embed.compression import CompressedTables, LowRankVQ, MethodConfigError
from recsys_embed.compression.lr2vq import serving_bytes
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables import kjt_from_ids, layout_class

from hostile import train_small

N, D = 2000, 16


def method(seed: int = 0, **options: object) -> LowRankVQ:
    torch.manual_seed(seed)
    return LowRankVQ.from_options(N, D, {"rank": 8, "subvectors": 4, "codewords": 16, **options}, budget=None)


def test_vectors_are_the_projected_nearest_codewords() -> None:
    vq = method()
    ids = torch.tensor([0, 5, 5, 1999, 1234])
    z = vq.latent.detach()[ids].view(-1, 4, 1, 2)
    distances = (z - vq.codebooks.detach()).pow(2).sum(-1)  # [N, m, K], brute force
    codes = vq.assign(vq.latent[ids])
    assert codes.shape == (5, 4) and codes.dtype == torch.int64
    assert torch.equal(distances.gather(2, codes[..., None]).squeeze(2), distances.min(2).values)
    by_hand = torch.stack([torch.cat([vq.codebooks[j, codes[i, j]] for j in range(4)]) for i in range(5)]) @ vq.projection
    with torch.no_grad():
        assert torch.equal(vq.lookup(ids), by_hand)
    assert vq.lookup(ids).shape == (5, D) and vq.lookup(torch.zeros(0, dtype=torch.int64)).shape == (0, D)
    # the same codes whatever the batch: one id alone, or among all
    assert torch.equal(vq.assign(vq.latent[1234:1235]), vq.assign(vq.latent)[1234:1235])


def test_gradients_reach_latent_codebooks_and_projection() -> None:
    vq = method()
    ids = torch.tensor([3, 3, 70])
    (vq.lookup(ids) * torch.randn(3, D)).sum().backward(retain_graph=True)  # the task's: straight through to z and C
    rows = vq.latent.grad.abs().sum(1)
    assert set(rows.nonzero().view(-1).tolist()) == {3, 70}
    assert torch.equal(vq.latent.grad[3].view(4, 2) != 0, torch.ones(4, 2, dtype=torch.bool))
    used = (vq.codebooks.grad.abs().sum(-1) > 0).sum()
    assert 0 < used <= 8 and bool(vq.projection.grad.abs().sum() > 0)
    # the codebook term pulls the codewords to their ids' z, the commitment term z to its codewords
    extra = vq.regularization_loss()
    assert extra is not None and extra.shape == () and vq.regularization_loss() is None  # handed out once
    vq.zero_grad()
    extra.backward()
    z, q = vq.latent[ids].detach(), vq.quantized(vq.assign(vq.latent[ids])).detach()
    expected_z = torch.zeros_like(vq.latent)
    expected_z.index_add_(0, ids, 0.25 * 2 * (z - q) / 3)
    assert torch.allclose(vq.latent.grad, expected_z, atol=1e-7)
    assert torch.isclose(vq.codebooks.grad.sum(), -2 * (z - q).sum() / 3, atol=1e-6)
    # no terms outside training, nor without gradients
    with torch.no_grad():
        vq.lookup(ids)
    vq.eval().lookup(ids)
    assert vq.regularization_loss() is None


def test_same_seed_same_method() -> None:
    a, b, c = method(3), method(3), method(4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.codebooks, c.codebooks)
    for vq in (a, b):
        vq.finalize()
    assert torch.equal(a.codes, b.codes)


def test_sizing_fits_the_served_bytes_and_its_errors() -> None:
    vq = LowRankVQ.from_options(100_000, 16, {}, budget=160_000)  # 1/10: 640,000 bytes
    assert (vq.rank, vq.subvectors, vq.codewords) == (12, 6, 256)  # s = 2; 7 codes per id do not fit
    assert vq.serving_bytes() == 600_000 + 4 * (256 * 12 + 12 * 16) <= 640_000
    assert serving_bytes(100_000, 16, 14, 7, 256) > 640_000 and serving_bytes(100_000, 16, 7, 7, 256) > 640_000
    assert LowRankVQ.from_options(100_000, 16, {"rank": 16}, budget=160_000).subvectors == 4
    assert LowRankVQ.from_options(100_000, 16, {"subvectors": 2}, budget=160_000).rank == 4
    least = N + 4 * (256 + 16)  # one code per id, rank 1
    assert LowRankVQ.from_options(N, D, {}, budget=least // 4).rank == 1
    with pytest.raises(MethodConfigError, match=rf"at least {least} bytes \({least // 4} weights\) served: 1 uint8 code\(s\) per id, rank 1, 256 codewords; the budget allows {least // 4 - 1} weights"):
        LowRankVQ.from_options(N, D, {}, budget=least // 4 - 1)
    errors = [
        ({"codewords": 300}, r"codewords \(K\) must be in \[1, 256\] \(codes are uint8\), got 300"),
        ({"rank": 32, "subvectors": 4}, "needs 1 <= rank <= dim 16 and subvectors dividing rank, got rank 32"),
        ({"rank": 8, "subvectors": 3}, "subvectors dividing rank, got rank 8, subvectors 3"),
        ({"rank": 8, "subvectors": 4, "beta": -1.0}, "needs beta >= 0"),
        ({"rank": 8}, "give 'rank' and 'subvectors', or a 'budget'"),
        ({"rank": 8, "subvectors": 4, "bits": 8}, r"unknown option\(s\) \['bits'\]"),
        ({"rank": "8", "subvectors": 4}, "option 'rank' must be int"),
    ]
    for options, message in errors:
        with pytest.raises(MethodConfigError, match=message):
            LowRankVQ.from_options(N, D, options, budget=None)


def test_more_codewords_than_ids_warn_and_clamp() -> None:
    with pytest.warns(UserWarning, match="256 codewords for 100 ids; clamped to 100"):
        vq = LowRankVQ.from_options(100, 8, {"rank": 4, "subvectors": 2}, budget=None)
    assert vq.codewords == 100 and vq.codebooks.shape == (2, 100, 2)
    assert vq.state_config()["codewords"] == 100  # the state rebuilds without a warning


def test_memory_accounting_of_both_states_is_exact() -> None:
    vq = method()
    weights = N * 8 + 16 * 8 + 8 * D  # latent, codebooks, projection
    assert vq.num_parameters() == weights and vq.memory_bytes() == 4 * weights * 3  # with two Adam moments
    assert vq.collision_rate() is None and "training state (fp32 latent 2,000x8" in vq.details()
    assert f"served after finalize: {vq.serving_bytes():,} bytes" in vq.details()
    vq.finalize()
    stored = sum(t.numel() * t.element_size() for t in vq.state_dict().values())
    assert vq.memory_bytes() == stored == vq.serving_bytes() == N * 4 + 4 * (16 * 8 + 8 * D)
    assert vq.num_parameters() == 16 * 8 + 8 * D + N * 4 // 4 and list(vq.parameters()) == []
    assert "serving state: uint8 codes 2,000x4" in vq.details()
    codes = [tuple(row) for row in vq.codes.tolist()]
    assert vq.collision_rate() == sum(codes.count(c) > 1 for c in codes) / N


def schema() -> Schema:
    return Schema([FeatureSpec("item_id", embedding_dim=D),
                   FeatureSpec("hist", kind="sequence", table="item_id", max_len=3, embedding_dim=D)])  # fmt: skip


def test_training_through_the_layout_learns_and_serves_the_same_vectors(tmp_path: Path) -> None:
    """Per-item labels; the layout's ``regularization_loss`` carries the VQ terms of each forward."""
    torch.manual_seed(0)
    tables = CompressedTables.from_options(schema(), {"item_id": N}, {"item_id": {"method": "lr2vq", "budget": 0.1}})
    head = torch.nn.Linear(D, 1)
    opt = torch.optim.Adam([*head.parameters(), *tables.parameters()], lr=0.01)
    g = torch.Generator().manual_seed(5)
    popular, label_of = torch.randint(0, N, (200,), generator=g), (torch.rand(N, generator=g) < 0.5).float()
    losses, terms = [], []
    for _ in range(150):
        items = popular[torch.randint(0, 200, (256,), generator=g)]
        kjt = kjt_from_ids({"item_id": items, "hist": items[:, None]})
        out = tables(kjt)
        extra = tables.regularization_loss()
        loss = F.binary_cross_entropy_with_logits(head(out.pooled["item_id"]).squeeze(1), label_of[items])
        opt.zero_grad()
        (loss + extra).backward()
        opt.step()
        losses.append(float(loss.detach()))
        terms.append(float(extra.detach()))
    assert sum(losses[-10:]) < 0.75 * sum(losses[:10]), (losses[:10], losses[-10:])
    assert sum(terms[-10:]) < sum(terms[:10]), (terms[:10], terms[-10:])  # z and codewords draw together
    with torch.no_grad():
        tables(kjt)
    assert tables.regularization_loss() is None
    # served: the codes of the latent's nearest codewords, the same vectors; the artifact holds no latent
    kjt = kjt_from_ids({"item_id": torch.arange(N), "hist": torch.arange(N)[:, None]})
    with torch.no_grad():
        before = tables.eval()(kjt)
        served = tables.serving_layout()
        assert torch.equal(served(kjt).pooled["item_id"], before.pooled["item_id"])
    tensors, config = served.export_state()
    assert sorted(k for k in tensors if k.startswith("method/")) == ["method/item_id/codebooks", "method/item_id/codes", "method/item_id/projection"]
    assert tensors["method/item_id/codes"].dtype == torch.uint8 and config["methods"]["item_id"]["stage"] == "serving"
    save_artifact(tmp_path / "a", tensors, {"layout": config})
    assert not list((tmp_path / "a").glob("*.p*kl*")) and not list((tmp_path / "a").glob("*.pt"))
    tensors, manifest = load_artifact(tmp_path / "a")
    again = layout_class(manifest["layout"]["layout"]).from_state(schema(), tensors, manifest["layout"])
    with torch.no_grad():
        after = again.eval()(kjt)
    assert torch.equal(after.pooled["item_id"], before.pooled["item_id"]) and torch.equal(after.sequences["hist"], before.sequences["hist"])
    assert again.memory_bytes() == served.methods["item_id"].serving_bytes()
    assert "serving state" in again.summary()


def test_fit_recovers_a_low_rank_clustered_table_exactly() -> None:
    """The error bound: rank ``r`` and at most ``K`` codes per sub-vector give (near) zero error."""
    torch.manual_seed(0)
    centers, basis = torch.randn(6, 3), torch.randn(3, D)  # 6 distinct rows of rank 3
    table = centers[torch.randint(0, 6, (500,))] @ basis
    vq = LowRankVQ.from_options(500, D, {"rank": 3, "subvectors": 1, "codewords": 8}, budget=None).fit(table)
    with torch.no_grad():
        error = (vq.lookup(torch.arange(500)) - table).abs().max()
    assert error < 1e-5 * table.abs().max(), error
    vq.finalize()
    assert (vq.lookup(torch.arange(500)) - table).abs().max() < 1e-5 * table.abs().max()
    # product codes: each id its own codeword in every sub-vector (K = n) leaves only the low-rank error, zero here
    low_rank = torch.randn(200, 4) @ torch.randn(4, D)
    with pytest.warns(UserWarning, match="clamped to 200"):
        vq = LowRankVQ.from_options(200, D, {"rank": 4, "subvectors": 2}, budget=None).fit(low_rank)
    with torch.no_grad():
        assert (vq.lookup(torch.arange(200)) - low_rank).abs().max() < 1e-5 * low_rank.abs().max()
    # a table of higher rank: at least its SVD tail, at most that plus the k-means error (the trade-off)
    full = torch.randn(300, D)
    vq = LowRankVQ.from_options(300, D, {"rank": 4, "subvectors": 2, "codewords": 32}, budget=None).fit(full)
    tail = torch.linalg.svdvals(full.double())[4:].pow(2).sum()
    with torch.no_grad():
        error = (vq.lookup(torch.arange(300)) - full).pow(2).sum()
        clustering = (vq.latent - vq.quantized(vq.assign(vq.latent))).pow(2).sum()
    assert tail * (1 - 1e-4) <= error <= (tail + clustering) * (1 + 1e-4), (tail, error, clustering)
    assert clustering < 0.2 * tail  # 32 codewords per 2-dim sub-vector: k-means did its job
    with pytest.raises(ValueError, match=r"fit takes a \[300, 16\] table in the training state"):
        vq.fit(full[:10])


def test_a_trained_run_saves_codes_not_the_latent(tmp_path: Path) -> None:
    """The CTR job end to end: the trainer adds the VQ terms (``regularization_loss``), the saved
    model is the served state, and evaluating it gives the test metrics the run reported."""
    import json

    layout = {"name": "per_feature", "compression": {"item_id": {"method": "lr2vq", "rank": 4, "subvectors": 2, "codewords": 16}}}
    model = train_small(tmp_path, 3000, 512, layout=layout)
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["layout_state"]["methods"]["item_id"] == {"method": "lr2vq", "rank": 4, "subvectors": 2, "codewords": 16, "beta": 0.25, "stage": "serving"}
    tensors, _ = load_artifact(model)
    assert tensors["tables.method/item_id/codes"].dtype == torch.uint8
    assert sorted(k for k in tensors if "item_id" in k) == ["tables.method/item_id/codebooks", "tables.method/item_id/codes", "tables.method/item_id/projection"]
    reported = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    from recsys_embed.jobs.ctr import evaluate

    assert evaluate(model, tmp_path / "data")["auc"] == pytest.approx(reported["auc"], abs=1e-6)
