"""Binary codes for retrieval (recsys_embed.compression.binary, .retrieval): shapes, packing, the
straight-through gradients, determinism, memory accounting, the artifact round trip, faiss Hamming
search, binary retrieval over a trained SASRec's item table against exact float retrieval, and
which rows a saved model's codes hold (a sequential model's retrieval rows, or a named table group's)."""

from __future__ import annotations

import doctest
import importlib.util
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

import recsys_embed.compression.binary
from recsys_embed.compression.binary import BinaryCodes, RecurrentBinarizer, binarize, sign_ste
from recsys_embed.compression.retrieval import BinaryIndex, exact_top_k, recall_at_k, rerank
from recsys_embed.errors import ArtifactError
from recsys_embed.features import FIRST_VALUE_ID
from recsys_embed.jobs import binarize as binarize_job
from recsys_embed.jobs.binarize import binarize_artifact
from recsys_embed.jobs.sequential import SequentialConfig, encode_histories, train_sequential
from recsys_embed.models import BERT4RecConfig, SASRecConfig
from test_sequential import TINY_MODEL, TINY_SASREC, cycle_events, one_thread, random_next_item  # noqa: F401 (one_thread: an autouse fixture)

needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="the [retrieval] extra (faiss-cpu) is not installed")


def rows(n: int = 400, d: int = 32, seed: int = 0) -> torch.Tensor:
    """Rows with structure (a few strong directions) and an offset, like a trained table."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g) @ torch.randn(4, d, generator=g) + 0.3 * torch.randn(n, d, generator=g) + 0.5


def test_shapes_and_the_packbits_layout() -> None:
    x = rows()
    codes = binarize(x, steps=3, bits=16, iterations=20)
    assert codes.codes.shape == (400, 3 * 16 // 8) and codes.codes.dtype == np.uint8 and codes.bits_per_item == 48
    signs, recon = codes.binarizer(x)
    assert signs.shape == (400, 3, 16) and recon.shape == (400, 32)
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    # bit j of a row is step j // m, bit j % m of that step, in np.packbits order
    unpacked = np.unpackbits(codes.codes, axis=1)
    assert np.array_equal(unpacked, signs.detach().reshape(400, -1).numpy() > 0)
    assert np.array_equal(codes.encode(x), codes.codes)
    # the first steps' bits are whole leading bytes
    assert np.array_equal(codes.prefix(2), np.packbits(signs[:, :2].detach().reshape(400, -1).numpy() > 0, axis=1))
    assert np.array_equal(codes.prefix(1, codes.encode(x[:5])), codes.codes[:5, :2])
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        codes.prefix(4)
    # decoding the stored bits gives the forward pass's reconstruction
    torch.testing.assert_close(codes.decode(), recon.detach(), rtol=1e-5, atol=1e-5)


def test_bits_must_be_whole_bytes() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        RecurrentBinarizer(32, 2, 12)
    with pytest.raises(ValueError, match="non-empty"):
        binarize(torch.zeros(0, 8))


def test_sign_passes_gradients_straight_through_to_every_step() -> None:
    z = torch.tensor([-2.0, -0.0, 0.0, 0.5, 3.0], requires_grad=True)
    out = sign_ste(z)
    assert out.tolist() == [-1.0, 1.0, 1.0, 1.0, 1.0]
    (out * torch.arange(5.0)).sum().backward()
    assert z.grad.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    binarizer = RecurrentBinarizer(32, 3, 16)
    x = rows()
    binarizer.initialize(x, torch.Generator().manual_seed(0))
    (binarizer(x)[1] - x).pow(2).sum().backward()
    for name in ("encoders", "encoder_bias", "decoders", "alpha"):
        grad = getattr(binarizer, name).grad
        assert grad is not None and all(bool(grad[t].abs().sum() > 0) for t in range(3)), name


def test_training_reconstructs_and_more_steps_reconstruct_better() -> None:
    x = rows()
    spread = (x - x.mean(0)).pow(2).sum(1).mean()
    errors = [float((binarize(x, steps=t, bits=32, iterations=150).decode() - x).pow(2).sum(1).mean()) for t in (1, 2, 4)]
    assert errors[0] < 0.5 * spread and errors[1] < errors[0] and errors[2] < errors[1], (float(spread), errors)


def test_same_seed_same_codes_other_seed_other_codes() -> None:
    x = rows()
    a, b = binarize(x, steps=2, bits=16, iterations=30, seed=3), binarize(x, steps=2, bits=16, iterations=30, seed=3)
    assert np.array_equal(a.codes, b.codes)
    assert all(torch.equal(u, v) for u, v in zip(a.binarizer.state_dict().values(), b.binarizer.state_dict().values()))
    assert not np.array_equal(a.codes, binarize(x, steps=2, bits=16, iterations=30, seed=4).codes)


def test_memory_is_the_codes_plus_the_binarizer() -> None:
    n, d, steps, bits = 1000, 24, 2, 16
    codes = binarize(rows(n, d), steps=steps, bits=bits, iterations=5)
    assert codes.code_bytes() == n * steps * bits // 8
    binarizer_floats = steps * bits * d + steps * bits + steps * d * bits + steps + d  # W, c, V, alpha, mu
    assert codes.binarizer.state_bytes() == 4 * binarizer_floats
    assert codes.memory_bytes() == n * steps * bits // 8 + 4 * binarizer_floats


def test_one_bit_per_dimension_is_a_32nd_of_fp32() -> None:
    n, d = 2000, 64
    x = rows(n, d)
    for steps, bits in ((1, 64), (2, 32), (4, 16)):  # T m == d
        codes = binarize(x, steps=steps, bits=bits, iterations=2)
        assert codes.code_bytes() * 32 == x.numel() * x.element_size()
    assert binarize(x, iterations=2).bits_per_item == d  # the default: one step of d bits


def test_artifact_round_trip_gives_equal_codes(tmp_path: Path) -> None:
    x = rows()
    codes = binarize(x, steps=2, bits=24, iterations=20)
    codes.save(tmp_path / "codes")
    loaded = BinaryCodes.load(tmp_path / "codes")
    assert np.array_equal(loaded.codes, codes.codes) and loaded.bits_per_item == 48
    torch.testing.assert_close(loaded.decode(), codes.decode())
    assert np.array_equal(loaded.encode(x[:7]), codes.codes[:7])
    assert not any(p.suffix in (".pt", ".pkl", ".pickle") for p in (tmp_path / "codes").iterdir())


def test_loading_another_artifact_says_it_holds_no_codes(tmp_path: Path) -> None:
    from recsys_embed.artifacts import save_artifact

    save_artifact(tmp_path / "other", {"w": torch.ones(2)}, {"layout": {"name": "per_feature"}})
    with pytest.raises(ArtifactError, match="no 'binary_codes'"):
        BinaryCodes.load(tmp_path / "other")


@needs_faiss
def test_binary_index_is_exact_hamming_search() -> None:
    rng = np.random.default_rng(0)
    items, queries = rng.integers(0, 256, (300, 8), dtype=np.uint8), rng.integers(0, 256, (20, 8), dtype=np.uint8)
    index = BinaryIndex(items)
    distances, ids = index.search(queries, 5)
    hamming = np.unpackbits(queries[:, None, :] ^ items[None, :, :], axis=2).sum(2)
    assert np.array_equal(distances, np.sort(hamming, axis=1)[:, :5])
    assert np.array_equal(np.take_along_axis(hamming, ids, 1), distances)
    assert len(index) == 300 and index.search(queries, 1000)[1].shape == (20, 300)
    with pytest.raises(ValueError, match="uint8"):
        index.search(queries[:, :4], 5)


def test_missing_faiss_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"pip install recsys-embed\[retrieval\]"):
        BinaryIndex(np.zeros((2, 1), np.uint8))


def test_exact_top_k_rerank_and_recall() -> None:
    items, queries = rows(300, 16), rows(10, 16, seed=1)
    exact = exact_top_k(queries, items, 10)
    assert torch.equal(exact, (queries @ items.T).topk(10, dim=1).indices)
    assert recall_at_k(exact, exact) == 1.0 and recall_at_k(exact[:, :5], exact) == 0.5
    everything = np.tile(np.arange(300), (10, 1))
    assert np.array_equal(rerank(queries, everything, items, 10), exact.numpy())


@needs_faiss
def test_docstring_examples() -> None:
    for module in (recsys_embed.compression.binary, recsys_embed.compression.retrieval):
        assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


@needs_faiss
def test_binary_retrieval_on_a_trained_sasrec_item_table_recalls_the_exact_top_10(tmp_path: Path) -> None:
    events = cycle_events(users=600, length=8, items=300)  # users walk a cycle of 300 items
    model = SASRecConfig(max_len=8, dim=32, num_layers=1, num_heads=1, dropout=0.0)
    report = train_sequential(events, SequentialConfig(model, epochs=2, batch_size=64, progress=False), tmp_path / "run")
    codes = binarize_artifact(tmp_path / "run" / "model", steps=2, bits=32, iterations=300)  # 64 bits = 8 bytes an item
    next_item = report.recommender.model
    items = next_item.item_vectors().detach()[FIRST_VALUE_ID:]
    assert codes.codes.shape == (300, 8) and codes.code_bytes() * 16 == items.numel() * 4  # 2 bits a dim: 1/16 of fp32
    histories = events.sort("user_id", "timestamp").group_by("user_id", maintain_order=True).agg(pl.col("item_id").head(6))["item_id"]
    values, lengths = encode_histories(report.recommender.lookup, histories)
    queries = next_item.query_vectors(values, lengths)
    exact = exact_top_k(queries, items, 10)
    # the queries score items exactly as the model does
    scores = next_item.score_next(values, lengths)[:, FIRST_VALUE_ID:]
    torch.testing.assert_close(queries @ items.T, scores)
    index = BinaryIndex(codes.codes)
    hamming = index.search(codes.encode(queries), 10)[1]
    reranked = rerank(queries, index.search(codes.encode(queries), 50)[1], codes.decode(), 10)
    random = 10 / items.shape[0]
    binary_recall, reranked_recall = recall_at_k(hamming, exact), recall_at_k(reranked, exact)
    assert binary_recall > 5 * random, (binary_recall, random)
    assert reranked_recall > binary_recall and reranked_recall > 0.5, (binary_recall, reranked_recall)


@needs_faiss
def test_the_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "binarize(items, steps=4, bits=64)" in b)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "(5000, 32) 292368 bytes with the binarizer", lines  # 160,000 of codes
    hamming, reranked = map(float, re.fullmatch(r"recall@10 (\S+) Hamming, (\S+) reranked by the decoded rows, random 0.002", lines[1]).groups())
    assert 0.05 < hamming < reranked and reranked > 0.3, lines


@pytest.mark.parametrize(("config", "extra"), [(TINY_MODEL, 1), (TINY_SASREC, 0)], ids=["bert4rec", "sasrec"])
def test_a_sequential_artifact_binarizes_its_retrieval_rows_and_a_named_group_its_table(
    config: BERT4RecConfig | SASRecConfig, extra: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    next_item = random_next_item(config, rows=20)
    monkeypatch.setattr(binarize_job, "load_model", lambda path: SimpleNamespace(task="sequential", model=next_item))
    options = {"steps": 2, "bits": 16, "iterations": 5}
    codes = binarize_artifact(tmp_path / "model", **options)  # BERT4Rec: [e_i, b_i], the output bias coded too
    assert codes.binarizer.dim == config.dim + extra and codes.codes.shape == (20 - FIRST_VALUE_ID, 4)
    np.testing.assert_array_equal(codes.codes, binarize(next_item.retrieval_vectors()[FIRST_VALUE_ID:], **options).codes)
    table = binarize_artifact(tmp_path / "model", group="items", **options)
    assert table.binarizer.dim == config.dim
    np.testing.assert_array_equal(table.codes, binarize(next_item.item_vectors().detach()[FIRST_VALUE_ID:], **options).codes)


def test_a_ctr_artifact_needs_a_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binarize_job, "load_model", lambda path: SimpleNamespace(task="ctr"))
    with pytest.raises(ValueError, match="name the table group"):
        binarize_artifact(tmp_path / "model")
