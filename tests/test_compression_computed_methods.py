"""The computed compression methods (ROBE, TT-Rec, DHE): their math against a direct reference
computation, their budget sizing and minimum errors, and the stability of their hashes.

The references hash with a pure-Python SplitMix64 of ``value ^ seed`` (the definition in
:mod:`recsys_embed.hashing`), element by element, independent of the vectorized torch code.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from recsys_embed.compression import DeepHashEmbedding, MethodConfigError, RandomOffsetBlock, TensorTrain
from recsys_embed.compression.dhe import mlp_weights
from recsys_embed.compression.tt_rec import core_weights
from recsys_embed.hashing import seed_of

U64 = (1 << 64) - 1


def splitmix64(value: int, seed: int) -> int:
    z = ((value & U64) ^ seed) + 0x9E3779B97F4A7C15 & U64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & U64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & U64
    return z ^ (z >> 31)


# ---- ROBE ------------------------------------------------------------------------------------


def robe_reference(robe: RandomOffsetBlock, x: int) -> list[float]:
    """vector(x)[j Z + t] = g(x, j) A[(h(x, j) + t) mod S], with H mod 2S = h + S [g = -1]."""
    array, size, z = robe.array.detach().tolist(), robe.size, robe.chunk
    out = []
    for i in range(robe.dim):
        j, t = divmod(i, z)
        hashed = splitmix64(x * (robe.dim // z) + j, seed_of(robe.salt)) % (2 * size)
        out.append((-1.0 if hashed >= size else 1.0) * array[(hashed % size + t) % size])
    return out


@pytest.mark.parametrize("chunk", [1, 4, 16])
def test_robe_reads_signed_chunks_of_the_shared_array(chunk: int) -> None:
    torch.manual_seed(0)
    robe = RandomOffsetBlock.from_options(5000, 16, {"chunk": chunk, "salt": "s1"}, budget=997)
    ids = [0, 1, 17, 4999, 123]
    assert robe.lookup(torch.tensor(ids)).tolist() == [robe_reference(robe, x) for x in ids]
    assert robe.num_parameters() == 997 and robe.state_config() == {"size": 997, "chunk": chunk, "salt": "s1"}


def test_robe_gradient_is_the_signed_count_of_reads() -> None:
    torch.manual_seed(0)
    robe = RandomOffsetBlock.from_options(300, 8, {"size": 50, "chunk": 4}, budget=None)
    ids = torch.tensor([3, 3, 7, 299])
    weights = torch.randn(4, 8)
    (robe.lookup(ids) * weights).sum().backward()
    expected = torch.zeros(50)
    for row, x in enumerate(ids.tolist()):
        for i in range(8):
            j, t = divmod(i, 4)
            hashed = splitmix64(x * 2 + j, seed_of("robe")) % 100
            expected[(hashed % 50 + t) % 50] += (-1.0 if hashed >= 50 else 1.0) * weights[row, i]
    assert torch.allclose(robe.array.grad, expected, atol=1e-6)


def test_robe_hashes_are_stable() -> None:
    """Golden values: the offsets and signs an artifact's vectors depend on never change."""
    robe = RandomOffsetBlock.from_options(10**9, 8, {"size": 1000, "chunk": 4}, budget=None)
    index, signs = robe.positions(torch.tensor([0, 1, 10**9 - 1]))
    assert index.view(3, 2, 4)[:, :, 0].tolist() == [[147, 373], [994, 322], [636, 540]]
    assert signs.view(3, 2).tolist() == [[1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]
    other = RandomOffsetBlock.from_options(10**9, 8, {"size": 1000, "chunk": 4, "salt": "other"}, budget=None)
    assert not torch.equal(other.positions(torch.tensor([0, 1]))[0], index[:16])


def test_robe_collision_rate_is_that_of_whole_vectors() -> None:
    one_chunk = RandomOffsetBlock.from_options(2000, 8, {"size": 500, "chunk": 8}, budget=None)
    index, signs = one_chunk.positions(torch.arange(2000))
    slots = (index.view(2000, 8)[:, 0] * 2 + (signs.view(2000) < 0)).tolist()  # (offset, sign): the whole vector
    shared = sum(slots.count(s) > 1 for s in slots) / 2000
    assert one_chunk.collision_rate() == pytest.approx(1 - (1 - 1 / 1000) ** 1999)
    assert abs(shared - one_chunk.collision_rate()) < 0.03, shared
    two_chunks = RandomOffsetBlock.from_options(2000, 8, {"size": 500, "chunk": 4}, budget=None)
    assert two_chunks.collision_rate() == pytest.approx(1 - (1 - 1 / 1000**2) ** 1999)
    many = RandomOffsetBlock.from_options(10**9, 128, {"size": 10**6, "chunk": 1}, budget=None)  # (2S)^128: beyond floats
    assert 0 <= many.collision_rate() < 1e-200


def test_robe_sizing_and_its_errors() -> None:
    assert RandomOffsetBlock.from_options(100, 16, {}, budget=160).chunk == 8  # two chunks of the default Z
    with pytest.raises(MethodConfigError, match=r"at least one chunk of 8 weights \(32 bytes\), the budget allows 5"):
        RandomOffsetBlock.from_options(100, 16, {}, budget=5)
    with pytest.raises(MethodConfigError, match="chunk .* must divide dim 16, got 3"):
        RandomOffsetBlock.from_options(100, 16, {"chunk": 3}, budget=160)
    with pytest.raises(MethodConfigError, match="either 'size' or 'budget'"):
        RandomOffsetBlock.from_options(100, 16, {"size": 10}, budget=160)
    with pytest.raises(MethodConfigError, match="option 'chunk' must be int"):
        RandomOffsetBlock.from_options(100, 16, {"chunk": "4"}, budget=160)


# ---- TT-Rec ----------------------------------------------------------------------------------


def test_tt_rec_vectors_are_the_contracted_cores_in_mixed_radix_order() -> None:
    torch.manual_seed(0)
    tt = TensorTrain.from_options(1000, 12, {"rank": 3, "id_factors": [11, 10, 10]}, budget=None)
    (n1, n2, n3), (d1, d2, d3), r = tt.id_factors, tt.dim_factors, tt.rank
    assert tt.dim_factors == [2, 2, 3]
    full = torch.einsum(
        "iar,jrbs,ksc->ijkabc", tt.core1.view(n1, d1, r), tt.core2.view(n2, r, d2, r), tt.core3.view(n3, r, d3)
    ).reshape(n1 * n2 * n3, 12)[:1000]
    assert torch.allclose(tt.lookup(torch.arange(1000)), full, atol=1e-6)  # >= n1 n2 ids: the all-pairs GEMM
    assert torch.allclose(tt.lookup(torch.arange(0, 1000, 10)), full[::10], atol=1e-6)  # fewer: per id
    # one id by hand: its three digits
    i1, i2, i3 = 7, 3, 9
    by_hand = torch.einsum("ar,rbs,sc->abc", tt.core1[i1].view(d1, r), tt.core2[i2].view(r, d2, r), tt.core3[i3].view(r, d3))
    assert torch.allclose(tt.lookup(torch.tensor([(i1 * n2 + i2) * n3 + i3]))[0], by_hand.reshape(-1), atol=1e-6)


def test_tt_rec_rank_is_the_largest_that_fits_and_its_minimum() -> None:
    tt = TensorTrain.from_options(100_000, 16, {}, budget=160_000)
    assert (tt.id_factors, tt.dim_factors) == ([47, 47, 46], [2, 2, 4])
    assert tt.num_parameters() == core_weights(tt.id_factors, tt.dim_factors, tt.rank) <= 160_000
    assert core_weights(tt.id_factors, tt.dim_factors, tt.rank + 1) > 160_000
    least = 47 * 2 + 47 * 2 + 46 * 4
    assert TensorTrain.from_options(100_000, 16, {}, budget=least).rank == 1
    with pytest.raises(MethodConfigError, match=rf"at least {least} weights \({4 * least} bytes\) at rank 1, the budget allows {least - 1}"):
        TensorTrain.from_options(100_000, 16, {}, budget=least - 1)
    with pytest.raises(MethodConfigError, match="dim 13 does not factor"):
        TensorTrain.from_options(1000, 13, {}, budget=10_000)
    with pytest.raises(MethodConfigError, match="id_factors must be 3 positive ints with a product >= 1000"):
        TensorTrain.from_options(1000, 16, {"rank": 2, "id_factors": [10, 10, 9]}, budget=None)
    with pytest.raises(MethodConfigError, match="dim_factors must be 3 positive ints with the product 16"):
        TensorTrain.from_options(1000, 16, {"rank": 2, "dim_factors": [2, 2, 2]}, budget=None)


def test_tt_rec_starts_with_the_variance_of_an_exact_table() -> None:
    torch.manual_seed(0)
    tt = TensorTrain.from_options(100_000, 16, {}, budget=160_000)
    variance = float(tt.lookup(torch.arange(0, 100_000, 7)).detach().var())
    assert 0.5 < variance / (0.05**2 / 3) < 2, variance


# ---- DHE -------------------------------------------------------------------------------------


def dhe_buckets(dhe: DeepHashEmbedding, x: int) -> list[int]:
    """h_j(x) = splitmix64(x ^ s_j) mod m, s_j = splitmix64(j ^ seed_of(salt))."""
    return [splitmix64(x, splitmix64(j, seed_of(dhe.salt))) % dhe.buckets for j in range(dhe.hashes)]


def test_dhe_uniform_encoding_and_mlp_against_a_direct_computation() -> None:
    torch.manual_seed(0)
    dhe = DeepHashEmbedding.from_options(10**6, 8, {"hashes": 32, "layers": 2, "width": 5}, budget=None)
    ids = [0, 5, 999_999]
    encoded = torch.tensor([[2 * h / (10**6 - 1) - 1 for h in dhe_buckets(dhe, x)] for x in ids])
    assert torch.allclose(dhe.encode(torch.tensor(ids)), encoded, atol=1e-6)
    first, _, second, _, last = dhe.mlp
    by_hand = F.linear(F.mish(F.linear(F.mish(F.linear(encoded, first.weight, first.bias)), second.weight, second.bias)), last.weight, last.bias)
    assert torch.allclose(dhe.lookup(torch.tensor(ids)), by_hand, atol=1e-5)


def test_dhe_gaussian_encoding_is_box_muller_of_bucket_pairs() -> None:
    dhe = DeepHashEmbedding.from_options(1000, 8, {"hashes": 6, "encoding": "gaussian", "width": 4}, budget=None)
    buckets = dhe_buckets(dhe, 42)
    p = [(h + 1) / 10**6 for h in buckets]
    pairs = [(math.sqrt(-2 * math.log(p[2 * a])), 2 * math.pi * p[2 * a + 1]) for a in range(3)]
    expected = [r * math.cos(t) for r, t in pairs] + [r * math.sin(t) for r, t in pairs]
    assert torch.allclose(dhe.encode(torch.tensor([42]))[0], torch.tensor(expected), atol=1e-4)
    many = DeepHashEmbedding.from_options(1000, 8, {"hashes": 64, "encoding": "gaussian", "width": 4}, budget=None)
    codes = many.encode(torch.arange(2000))
    assert abs(float(codes.mean())) < 0.02 and abs(float(codes.std()) - 1) < 0.02


def test_dhe_hashes_are_stable() -> None:
    dhe = DeepHashEmbedding.from_options(1000, 8, {"hashes": 4, "width": 4}, budget=None)
    codes = (dhe.encode(torch.tensor([0, 7])) + 1) * (10**6 - 1) / 2
    assert codes.round().long().tolist() == [[94659, 744761, 848630, 846435], [260055, 94028, 319632, 895728]]


@pytest.mark.parametrize("batchnorm", [False, True])
def test_dhe_width_is_the_widest_that_fits_and_flops_are_counted(batchnorm: bool) -> None:
    dhe = DeepHashEmbedding.from_options(100_000, 16, {"batchnorm": batchnorm}, budget=160_000)
    assert dhe.num_parameters() == mlp_weights(256, dhe.width, 2, 16, batchnorm) <= 160_000
    assert mlp_weights(256, dhe.width + 1, 2, 16, batchnorm) > 160_000
    with FlopCounterMode(display=False) as counter:
        dhe.eval().lookup(torch.arange(10))
    linear = sum(n for op, n in counter.get_flop_counts()["Global"].items() if "mm" in str(op))
    assert linear == 10 * dhe.flops_per_id() and f"{dhe.flops_per_id():,} FLOPs per id" in dhe.details()
    least = mlp_weights(256, 1, 2, 16, batchnorm)
    with pytest.raises(MethodConfigError, match=rf"MLP 256-1-1-16 needs at least {least} weights \({4 * least} bytes\), the budget allows 100"):
        DeepHashEmbedding.from_options(100_000, 16, {"batchnorm": batchnorm}, budget=100)


def test_dhe_option_errors_and_batch_norm_state_round_trip() -> None:
    with pytest.raises(MethodConfigError, match="even for the gaussian"):
        DeepHashEmbedding.from_options(100, 8, {"hashes": 5, "encoding": "gaussian"}, budget=10_000)
    with pytest.raises(MethodConfigError, match="encoding must be one of"):
        DeepHashEmbedding.from_options(100, 8, {"encoding": "binary"}, budget=10_000)
    with pytest.raises(MethodConfigError, match=r"unknown option\(s\) \['hidden'\]"):
        DeepHashEmbedding.from_options(100, 8, {"hidden": 4}, budget=10_000)
    torch.manual_seed(0)
    dhe = DeepHashEmbedding.from_options(100, 8, {"batchnorm": True, "hashes": 16}, budget=2000)
    dhe.lookup(torch.arange(50)).sum().backward()  # training mode: running statistics move
    tensors, config = dhe.export_state()
    assert any(k.endswith("running_mean") for k in tensors) and "seeds" not in tensors
    again = DeepHashEmbedding.from_state(100, 8, tensors, config)
    assert torch.equal(dhe.eval().lookup(torch.arange(100)), again.eval().lookup(torch.arange(100)))
