"""What each row method promises beyond the shared harness (tests/test_compression_methods.py):
double hashing's two independent hashes and its pair-collision rate, the adaptive hybrid's
collision-free frequent ids, mixed dims' block geometry, projections and exact counts, QR's
vectors, its dense quotient factors (``mult``) and the row product they go through."""

from __future__ import annotations

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.compression import (
    AdaptiveHashing,
    CompressedTables,
    DoubleHashing,
    MethodConfigError,
    MixedDimensions,
    QuotientRemainder,
)
from recsys_embed.compression.method import ADAM_MOMENTS
from recsys_embed.compression.mixed_dims import block_sizes
from recsys_embed.compression.kernels import KERNEL, double_hash_rows, hash_buckets, row_product
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.hashing import bucket_torch, hash_int_torch, seed_of
from recsys_embed.tables.accounting import expected_collision_rate

DIM = 16


def layout(num_ids: int, spec: dict) -> CompressedTables:
    torch.manual_seed(0)
    return CompressedTables.from_options(Schema([FeatureSpec("item_id", embedding_dim=DIM)]), {"item_id": num_ids}, {"item_id": spec})


def kernel_weight(tables: CompressedTables, table: int) -> torch.Tensor:
    assert tables.kernel is not None
    return tables.kernel.weights()[tables.kernel.table_names.index(f"item_id/{table}")].detach()


def shared(rows: torch.Tensor) -> torch.Tensor:
    """Per column of ``rows`` ``[k, n]``: whether another column holds the same k-tuple."""
    _, inverse, counts = torch.unique(rows, dim=1, return_inverse=True, return_counts=True)
    return counts[inverse] > 1


# ---- double hashing -------------------------------------------------------------------------

def test_double_hashing_reads_two_independent_hashes() -> None:
    n = 20_000
    method = DoubleHashing.from_options(n, DIM, {}, budget=n * DIM // 10)
    assert method.table_rows == (1000, 1000)
    rows = method.kernel_rows(torch.arange(n))
    # independent: the pair (h1, h2) is spread over all M1 x M2 cells, so far fewer ids share
    # both rows than share one; and the two hashes disagree on all but ~1/M of the ids
    one, both = float(shared(rows[:1]).float().mean()), float(shared(rows).float().mean())
    assert one == pytest.approx(expected_collision_rate(n, 1000), abs=0.01)
    assert both == pytest.approx(method.collision_rate(), abs=0.01) and both < 0.05 < one
    assert float((rows[0] == rows[1]).float().mean()) < 0.005
    # a different salt gives different hashes
    other = DoubleHashing.from_options(n, DIM, {"salt": "other"}, budget=n * DIM // 10).kernel_rows(torch.arange(n))
    assert float((other == rows).float().mean()) < 0.005


@pytest.mark.parametrize("combine", ["sum", "concat"])
def test_double_hashing_vectors_combine_the_two_rows(combine: str) -> None:
    tables = layout(3000, {"method": "double_hashing", "budget": 0.1, "combine": combine})
    method: DoubleHashing = tables.methods["item_id"]  # type: ignore[assignment]
    width = DIM if combine == "sum" else DIM // 2
    rows_total = 3000 * DIM // 10 // width
    assert method.kernel_tables() == [(rows_total - rows_total // 2, width), (rows_total // 2, width)]
    first, second = kernel_weight(tables, 0), kernel_weight(tables, 1)
    h = method.kernel_rows(torch.arange(3000))
    expected = first[h[0]] + second[h[1]] if combine == "sum" else torch.cat([first[h[0]], second[h[1]]], dim=1)
    assert torch.allclose(tables.table_vectors("item_id"), expected)
    assert tables.group_parameters("item_id") == rows_total * width


def test_double_hashing_concat_refuses_prefixes_within_one_table() -> None:
    concat = DoubleHashing.from_options(1000, DIM, {"combine": "concat"}, budget=1600)
    assert not concat.supports_prefix(DIM // 2) and concat.supports_prefix(DIM // 2 + 4)
    assert DoubleHashing.from_options(1000, DIM, {}, budget=1600).supports_prefix(4)


def test_double_hashing_bad_configs_say_what_is_expected() -> None:
    with pytest.raises(MethodConfigError, match="at least 2 row"):
        DoubleHashing.from_options(1000, DIM, {}, budget=DIM + 1)
    with pytest.raises(MethodConfigError, match="divisible by 8"):
        DoubleHashing.from_options(1000, 12, {"combine": "concat"}, budget=1000)
    with pytest.raises(MethodConfigError, match="combine must be one of"):
        DoubleHashing.from_options(1000, DIM, {"combine": "mult"}, budget=1000)
    with pytest.raises(MethodConfigError, match="either 'rows' or 'budget'"):
        DoubleHashing.from_options(1000, DIM, {"rows": 10}, budget=1000)


# ---- frequency-adaptive hybrid --------------------------------------------------------------

def test_adaptive_frequent_ids_own_their_rows_and_never_collide() -> None:
    n, frequent = 5000, 300
    tables = layout(n, {"method": "adaptive", "budget": 0.1, "frequent": frequent})
    method: AdaptiveHashing = tables.methods["item_id"]  # type: ignore[assignment]
    assert (method.frequent, method.rows) == (frequent, n * DIM // 10 // DIM - frequent)
    rows = method.kernel_rows(torch.arange(n))[0]
    assert torch.equal(rows[:frequent], torch.arange(frequent))  # id i < F reads row i
    tail = rows[frequent:]
    assert bool(((tail >= frequent) & (tail < frequent + method.rows)).all())  # the tail only the hashed rows
    assert not bool(shared(rows[None])[:frequent].any())
    vectors, weight = tables.table_vectors("item_id"), kernel_weight(tables, 0)
    assert torch.equal(vectors[:frequent], weight[:frequent]) and torch.equal(vectors[frequent:], weight[tail])
    # collision rate: only tail ids collide, at the hashing trick's rate over the tail
    assert method.collision_rate() == pytest.approx((n - frequent) / n * expected_collision_rate(n - frequent, method.rows))
    assert float(shared(rows[None]).float().mean()) == pytest.approx(method.collision_rate(), abs=0.02)


def test_adaptive_training_keeps_frequent_ids_apart() -> None:
    """A step on frequent id 5 changes its row only; a step on a tail id changes the row it shares."""
    tables = layout(2000, {"method": "adaptive", "budget": 0.1, "frequent_fraction": 0.05})
    method: AdaptiveHashing = tables.methods["item_id"]  # type: ignore[assignment]
    assert method.frequent == 100 and method.rows == 100
    before = tables.table_vectors("item_id")
    tables(KeyedJaggedTensor.from_lengths_sync(["item_id"], torch.tensor([5]), torch.tensor([1]))).pooled["item_id"].sum().backward()
    changed = (tables.table_vectors("item_id") != before).any(1).nonzero().squeeze(1).tolist()
    assert changed == [5]


def test_adaptive_default_split_and_errors() -> None:
    method = AdaptiveHashing.from_options(10_000, DIM, {}, budget=10_000 * DIM // 10)
    assert (method.frequent, method.rows) == (500, 500)  # half the budget's rows exact
    assert AdaptiveHashing.from_options(10_000, DIM, {"frequent": 10, "rows": 7}, budget=None).kernel_tables() == [(17, DIM)]
    with pytest.raises(MethodConfigError, match=r"300 exact rows plus at least 1 hashed row need 4816 weights"):
        AdaptiveHashing.from_options(10_000, DIM, {"frequent": 300}, budget=300 * DIM)
    with pytest.raises(MethodConfigError, match="not both"):
        AdaptiveHashing.from_options(10_000, DIM, {"frequent": 3, "frequent_fraction": 0.1}, budget=1000)
    with pytest.raises(MethodConfigError, match="frequent must lie in"):
        AdaptiveHashing.from_options(100, DIM, {"frequent": 100, "rows": 5}, budget=None)
    with pytest.raises(MethodConfigError, match="give 'frequent' or 'frequent_fraction' too"):
        AdaptiveHashing.from_options(100, DIM, {"rows": 5}, budget=None)


# ---- mixed dimensions -----------------------------------------------------------------------

def test_mixed_dims_blocks_dims_and_projections() -> None:
    n = 20_000
    tables = layout(n, {"method": "mixed_dims", "budget": 0.5, "blocks": 4, "alpha": 0.3})
    method: MixedDimensions = tables.methods["item_id"]  # type: ignore[assignment]
    assert method.sizes == block_sizes(n, 4) and sum(method.sizes) == n
    assert method.sizes == sorted(method.sizes) and method.dims == sorted(method.dims, reverse=True)
    assert all(d % 4 == 0 and 4 <= d <= DIM for d in method.dims) and method.dims[0] == DIM
    assert method.rows == method.sizes and method.collision_rate() is None  # budget 0.5: every id its own row
    # a projection [d_b, D] for every block narrower than D, none for full-width blocks
    assert [tuple(p.shape) for p in method.projections] == [(d, DIM) for d in method.dims if d != DIM]
    assert not set(map(id, method.projections)) & set(map(id, tables.fused_parameters()))
    # exact counts: block tables plus projections, within the budget, and the budget sets the dims
    counted = sum(r * d for r, d in zip(method.rows, method.dims)) + sum(d * DIM for d in method.dims if d != DIM)
    assert tables.group_parameters("item_id") == counted <= n * DIM // 2
    wider = layout(n, {"method": "mixed_dims", "budget": 0.9, "blocks": 4, "alpha": 0.3}).methods["item_id"]
    assert sum(wider.dims) > sum(method.dims)  # type: ignore[union-attr]
    # every id: its own block's row, projected
    vectors, ids = tables.table_vectors("item_id"), torch.arange(n)
    rows = method.kernel_rows(ids)
    assert bool(((rows >= 0).sum(0) == 1).all())
    projections = iter(method.projections)
    expected = torch.zeros(n, DIM)
    for b, d in enumerate(method.dims):
        own = rows[b] >= 0
        part = kernel_weight(tables, b)[rows[b][own]]
        expected[own] = part if d == DIM else part @ next(projections).detach()
        assert torch.equal(own.nonzero().squeeze(1), torch.arange(sum(method.sizes[:b]), sum(method.sizes[: b + 1])))
    assert torch.allclose(vectors, expected, atol=1e-6)


def test_mixed_dims_small_budget_hashes_the_rarest_block() -> None:
    n = 100_000
    method = MixedDimensions.from_options(n, DIM, {}, budget=n * DIM // 10)
    assert method.sizes == [18, 298, 5307, 94377] and method.dims == [16, 8, 4, 4]
    assert method.rows[:3] == method.sizes[:3] and method.hashed == [3] and 1 <= method.rows[3] < method.sizes[3]
    total = sum(r * d for r, d in method.kernel_tables()) + method.num_parameters()
    assert n * DIM // 10 - 4 < total <= n * DIM // 10  # the budget is used up to one row
    assert method.collision_rate() == pytest.approx(94377 / n * expected_collision_rate(94377, method.rows[3]))
    # below 4 blocks' minimum (blocks 0-2 whole, projections, one hashed row) it takes fewer blocks
    least = 18 * 16 + 298 * 8 + 5307 * 4 + (8 + 4 + 4) * DIM + 4
    assert len(MixedDimensions.from_options(n, DIM, {}, budget=least).sizes) == 4
    fewer = MixedDimensions.from_options(n, DIM, {}, budget=least - 1)
    assert len(fewer.sizes) < 4 and sum(r * d for r, d in fewer.kernel_tables()) + fewer.num_parameters() <= least - 1
    # down to one block of dim D, the hashing trick; below one row of D weights: the minimum stated
    one = MixedDimensions.from_options(50, DIM, {}, budget=80)
    assert (one.sizes, one.dims, one.rows, one.num_parameters()) == ([50], [DIM], [5], 0)
    with pytest.raises(MethodConfigError, match=f"blocks \\[50\\] of dims \\[{DIM}\\] .* need at least {DIM} weights"):
        MixedDimensions.from_options(50, DIM, {}, budget=DIM - 1)


def test_mixed_dims_explicit_geometry_and_errors() -> None:
    method = MixedDimensions.from_options(100, 8, {"sizes": [10, 90], "dims": [8, 4], "rows": [10, 30]}, budget=None)
    assert method.kernel_tables() == [(10, 8), (30, 4)] and method.hashed == [1]
    assert MixedDimensions.from_options(100, 8, method.state_config(), budget=None).state_config() == method.state_config()
    with pytest.raises(MethodConfigError, match="summing to the group's 100 ids"):
        MixedDimensions.from_options(100, 8, {"sizes": [10, 80], "dims": [8, 4]}, budget=None)
    with pytest.raises(MethodConfigError, match="multiples of 4"):
        MixedDimensions.from_options(100, 8, {"sizes": [10, 90], "dims": [8, 6]}, budget=None)
    with pytest.raises(MethodConfigError, match="without 'budget'"):
        MixedDimensions.from_options(100, 8, {"sizes": [10, 90], "dims": [8, 4]}, budget=400)


# ---- QR -------------------------------------------------------------------------------------

@pytest.mark.parametrize("combine", ["mult", "add", "concat"])
def test_qr_vectors_combine_the_quotient_and_remainder_rows(combine: str) -> None:
    n = 3000
    tables = layout(n, {"method": "qr", "budget": 0.1, "combine": combine})
    method = tables.methods["item_id"]
    assert isinstance(method, QuotientRemainder)
    m = method.remainder
    ids = torch.tensor([0, 1, m - 1, m, m + 1, 2 * m + 5, n - 1])
    with torch.no_grad():
        out = tables(KeyedJaggedTensor.from_lengths_sync(["item_id"], ids, torch.ones_like(ids))).pooled["item_id"]
    if combine == "mult":  # the remainder rows in the kernel, the quotient factors dense
        assert [r for r, _ in method.kernel_tables()] == [m] and method.quotient.shape == (method.quotients, DIM)
        expected = method.quotient.detach()[ids // m] * kernel_weight(tables, 0)[ids % m]
    else:
        quotient, remainder = kernel_weight(tables, 0)[ids // m], kernel_weight(tables, 1)[ids % m]
        expected = quotient + remainder if combine == "add" else torch.cat([quotient, remainder], dim=1)
    assert torch.allclose(out, expected, atol=1e-7)
    # no two ids share both rows: every id keeps a vector of its own
    every = tables(KeyedJaggedTensor.from_lengths_sync(["item_id"], torch.arange(n), torch.ones(n, dtype=torch.long))).pooled["item_id"]
    assert torch.unique(every.detach(), dim=0).shape[0] == n


def test_qr_mult_trains_its_quotient_factors_densely_and_counts_them() -> None:
    n = 3000
    tables = layout(n, {"method": "qr", "budget": 0.1})
    method = tables.methods["item_id"]
    assert isinstance(method, QuotientRemainder)
    m = method.remainder
    ids = torch.tensor([5, m + 5, 2 * m + 7, 5])
    rows = kernel_weight(tables, 0)[ids % m].clone()
    grad = torch.randn(len(ids), DIM)
    tables(KeyedJaggedTensor.from_lengths_sync(["item_id"], ids, torch.ones_like(ids))).pooled["item_id"].backward(grad)
    # d Q[q] = sum over the ids of quotient q of grad * R[i mod m]; the dense optimizer steps it
    expected = torch.zeros_like(method.quotient).index_add_(0, ids // m, grad * rows)
    assert method.quotient.grad is not None and torch.allclose(method.quotient.grad, expected, atol=1e-6)
    assert {id(p) for p in tables.fused_parameters()}.isdisjoint({id(method.quotient)})
    # memory: the quotient factors with their Adam moments, the kernel's remainder rows with rowwise Adagrad's momentum
    assert method.num_parameters() == method.quotients * DIM
    assert method.memory_bytes() == method.quotients * DIM * 4 * (1 + ADAM_MOMENTS)
    assert tables.num_parameters() == (method.quotients + m) * DIM <= n * DIM // 10
    assert "mult: quotient 11 x 16 (dense), remainder 289 x 16" in tables.summary()


def test_qr_mult_one_product_over_groups_of_different_geometry() -> None:
    """Features of several QR groups combine in one row product: each slot reads its own group's factors."""
    schema = Schema([FeatureSpec("user_id", embedding_dim=DIM), FeatureSpec("item_id", embedding_dim=DIM),
                     FeatureSpec("hist", kind="sequence", table="item_id", max_len=3, embedding_dim=DIM)])
    torch.manual_seed(0)
    tables = CompressedTables(schema, {"user_id": 500, "item_id": 2000},
                              {"user_id": QuotientRemainder(500, DIM, remainder=30), "item_id": QuotientRemainder(2000, DIM, remainder=70)})
    assert [u.features for u in tables.units] == [("user_id", "item_id", "hist")]
    kjt = KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id", "hist"], torch.tensor([499, 3, 1999, 71, 140, 2, 7]),
                                              torch.tensor([1, 1, 1, 1, 2, 1]))
    out = tables(kjt)
    assert tables.kernel is not None
    weights = {g: tables.kernel.weights()[tables.kernel.table_names.index(f"{g}/0")].detach() for g in ("user_id", "item_id")}

    def vector(group: str, i: int) -> torch.Tensor:
        method = tables.methods[group]
        return method.quotient.detach()[i // method.remainder] * weights[group][i % method.remainder]  # type: ignore[operator]

    assert torch.allclose(out.pooled["user_id"], torch.stack([vector("user_id", 499), vector("user_id", 3)]))
    assert torch.allclose(out.pooled["item_id"], torch.stack([vector("item_id", 1999), vector("item_id", 71)]))
    assert torch.allclose(out.sequences["hist"][0, :2], torch.stack([vector("item_id", 140), vector("item_id", 2)]))
    assert torch.allclose(out.sequences["hist"][1, 0], vector("item_id", 7)) and not out.sequences["hist"][0, 2].any()
    assert out.masks["hist"].tolist() == [[True, True, False], [True, False, False]]


@pytest.mark.skipif(not KERNEL, reason="the compiled row product is built on x86-64 with AVX2 only")
@pytest.mark.parametrize("dim", [16, 12, 4])
def test_row_product_kernel_equals_the_eager_ops(dim: int) -> None:
    """The compiled forward and backward against ``rows * table[index]`` in float64 (rows a strided
    view, as the kernel's output columns are; a non-contiguous incoming gradient)."""
    gen = torch.Generator().manual_seed(0)
    out_cols = torch.randn(64, 3 * 5 * dim, generator=gen)
    rows = out_cols.view(64, 15, dim)[:, 5:10].detach().requires_grad_()  # strides (15 * dim, dim, 1)
    assert not rows.is_contiguous()
    table = torch.randn(7, dim, generator=gen, requires_grad=True)
    index = torch.randint(0, 7, (64, 5), generator=gen)
    grad = torch.randn(5, 64, dim, generator=gen).transpose(0, 1)  # [64, 5, dim], not contiguous
    got = row_product(rows, table, index)
    got.backward(grad)
    rows64, table64 = rows.detach().double().requires_grad_(), table.detach().double().requires_grad_()
    expected = row_product(rows64, table64, index)  # float64: the eager path
    expected.backward(grad.double())
    assert torch.allclose(got.double(), expected, atol=1e-6)
    assert rows.grad is not None and torch.allclose(rows.grad.double(), rows64.grad, atol=1e-6)  # type: ignore[arg-type]
    assert table.grad is not None and torch.allclose(table.grad.double(), table64.grad, atol=1e-4)  # type: ignore[arg-type]


@pytest.mark.skipif(not KERNEL, reason="the compiled row product is built on x86-64 with AVX2 only")
def test_row_product_kernel_checks_its_inputs() -> None:
    rows, table = torch.randn(4, 2, 8), torch.randn(3, 8)
    with pytest.raises(RuntimeError, match=r"row_product: index must be int64 \[4, 2\]"):
        torch.ops.recsys_embed.row_product_forward(rows, torch.zeros(4, 3, dtype=torch.long), table)
    with pytest.raises(RuntimeError, match=r"row_product: table must be contiguous float32 \[T, 8\]"):
        torch.ops.recsys_embed.row_product_forward(rows, torch.zeros(4, 2, dtype=torch.long), torch.randn(3, 4))


@pytest.mark.skipif(not KERNEL, reason="the compiled ops are built on x86-64 with AVX2 only")
def test_double_hash_rows_kernel_equals_the_eager_hash() -> None:
    """Bit for bit the rows of ``hash_int_torch`` (high and low 32 bits, each modulo its table), seeds
    above 2^63 and ids up to 2^63 - 1 included; the eager path is the one for other devices."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.randint(0, 2**62, (5000,), generator=gen), torch.arange(300), torch.tensor([2**63 - 1])])
    for salt in ["", "item_id", "x" * 40]:
        seed = seed_of(salt)
        h = hash_int_torch(ids, seed)
        expected = torch.stack([((h >> 32) & 0xFFFFFFFF) % 1000, (h & 0xFFFFFFFF) % 99_991])
        assert torch.equal(double_hash_rows(ids, seed, 1000, 99_991), expected), salt
    assert any(seed_of(s) >= 2**63 for s in ["", "item_id", "x" * 40])
    with pytest.raises(RuntimeError, match=r"double_hash_rows: table rows must lie in \[1, 2\^31\), got 0 and 5"):
        torch.ops.recsys_embed.double_hash_rows(ids, 1, 0, 5)


def test_qr_mult_state_of_the_two_table_kernel_layout_is_refused_clearly() -> None:
    """A QR ``mult`` state from when the quotient table was a kernel table (no ``quotient`` tensor of
    its own) does not load as something else: the error names the tensors and the likely cause."""
    with pytest.raises(ValueError, match=r"qr state: tensors \[\] do not fit the method's \['quotient'\] \(state saved by another version of qr\?"):
        QuotientRemainder.from_state(3000, DIM, {}, {"method": "qr", "combine": "mult", "remainder": 289})


@pytest.mark.skipif(not KERNEL, reason="the compiled ops are built on x86-64 with AVX2 only")
def test_hash_buckets_kernel_equals_the_eager_buckets() -> None:
    """Bit for bit ``bucket_torch`` (the hashing trick's and the adaptive hybrid's rows, DHE's
    hashes of a 2-d ``[N, k]``), negative and extreme int64 values included."""
    gen = torch.Generator().manual_seed(1)
    values = torch.cat([torch.randint(-(2**62), 2**62, (5000,), generator=gen), torch.tensor([2**63 - 1, -(2**63), 0, 1])])
    for salt in ["", "hashing"]:
        for buckets in [1, 7, 1000, 2**31 - 1]:
            assert torch.equal(hash_buckets(values, seed_of(salt), buckets), bucket_torch(values, seed_of(salt), buckets)), (salt, buckets)
    grid = torch.randint(0, 10_000, (50, 8), generator=gen) ^ torch.arange(8)
    assert torch.equal(hash_buckets(grid, 0, 97), bucket_torch(grid, 0, 97)) and hash_buckets(grid, 0, 97).shape == (50, 8)
    with pytest.raises(RuntimeError, match=r"hash_buckets: buckets must lie in \[1, 2\^31\), got 0"):
        torch.ops.recsys_embed.hash_buckets(values, 1, 0)
