"""Row methods whose combine is a sum (double hashing ``sum``, QR ``add``) read the k rows of an id
as ONE bag the fused kernel sums (``CompressionMethod.pools_reads``) instead of k one-row slots and
a combine: same outputs and same fused-optimizer updates as the per-slot path, pooled and
sequence features, empty bags, padding and reads of no row (-1) alike."""

from __future__ import annotations

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.compression import CompressedTables, DoubleHashing, MixedDimensions, PluginError, QuotientRemainder
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.tables.base import TableOptimizer

IDS = {"user_id": 300, "item_id": 2000}
DIM = 16


class SlotDoubleHashing(DoubleHashing):
    """The per-slot path of the same method: k one-row slots and ``combine``."""

    def pools_reads(self) -> bool:
        return False


class SlotQuotientRemainder(QuotientRemainder):
    def pools_reads(self) -> bool:
        return False


class HalfRowsDoubleHashing(DoubleHashing):
    """Odd ids read no row of the second table (-1): a bag of one row, or zeros for that part."""

    def kernel_rows(self, ids: torch.Tensor) -> torch.Tensor:
        rows = super().kernel_rows(ids)
        rows[1] = torch.where(ids % 2 == 1, -1, rows[1])
        return rows


class SlotHalfRowsDoubleHashing(HalfRowsDoubleHashing):
    def pools_reads(self) -> bool:
        return False


METHODS = {  # name -> (pooled method, the same method read per slot)
    "double_hashing_sum": (lambda: DoubleHashing(IDS["item_id"], DIM, rows=400), lambda: SlotDoubleHashing(IDS["item_id"], DIM, rows=400)),
    "qr_add": (lambda: QuotientRemainder(IDS["item_id"], DIM, remainder=50, combine="add"),
               lambda: SlotQuotientRemainder(IDS["item_id"], DIM, remainder=50, combine="add")),
    "no_row_reads": (lambda: HalfRowsDoubleHashing(IDS["item_id"], DIM, rows=400), lambda: SlotHalfRowsDoubleHashing(IDS["item_id"], DIM, rows=400)),
}


def schema() -> Schema:
    return Schema([
        FeatureSpec("user_id", embedding_dim=DIM),
        FeatureSpec("item_id", embedding_dim=DIM),
        FeatureSpec("hist", kind="sequence", table="item_id", max_len=4, embedding_dim=DIM),
    ])


def build(method: object) -> CompressedTables:
    torch.manual_seed(0)
    return CompressedTables(schema(), IDS, {"item_id": method}, TableOptimizer("rowwise_adagrad", lr=0.1))  # type: ignore[dict-item]


def batch(seed: int, size: int = 64, full: bool = False) -> KeyedJaggedTensor:
    """Users, items (an empty item bag per 7 samples unless ``full``) and histories (empty, short,
    over-long; exactly max_len if ``full``), with repeated ids so rows get several gradients."""
    g = torch.Generator().manual_seed(seed)
    users, items = torch.randint(0, IDS["user_id"], (size,), generator=g), torch.randint(0, 200, (size,), generator=g)
    item_lengths = torch.ones(size, dtype=torch.int64)
    if not full:
        item_lengths[::7] = 0
    lengths = torch.full((size,), 4) if full else torch.randint(0, 7, (size,), generator=g)
    hist = torch.randint(0, 200, (int(lengths.sum()),), generator=g)
    return KeyedJaggedTensor.from_lengths_sync(
        ["user_id", "item_id", "hist"],
        torch.cat([users, items[item_lengths == 1], hist]),
        torch.cat([torch.ones(size, dtype=torch.int64), item_lengths, lengths]),
    )


def step(tables: CompressedTables, kjt: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
    """Forward, a fixed upstream gradient, backward (the fused optimizer updates the rows)."""
    out = tables(kjt)
    vectors = {**out.pooled, **out.sequences}
    g = torch.Generator().manual_seed(7)
    loss = sum((v * torch.randn(v.shape, generator=g)).sum() for _, v in sorted(vectors.items()))
    loss.backward()  # type: ignore[union-attr]
    return {k: v.detach().clone() for k, v in {**vectors, **{f"mask/{k}": m for k, m in out.masks.items()}}.items()}


@pytest.mark.parametrize("name", list(METHODS))
def test_pooled_reads_equal_per_slot_reads_in_outputs_and_updates(name: str) -> None:
    pooled, per_slot = (build(make()) for make in METHODS[name])
    assert pooled.pooled == {"user_id", "item_id", "hist"} and per_slot.pooled == {"user_id"}  # user_id: exact, one read
    assert pooled.kernel is not None and per_slot.kernel is not None
    # one slot per output slot instead of two: 1 (user) + 1 (item) + 4 (hist) against 1 + 2 + 8
    assert len(pooled.kernel.slot_tables) == 6 and len(per_slot.kernel.slot_tables) == 11
    start = [w.detach().clone() for w in pooled.kernel.weights()]
    for a, b in zip(start, per_slot.kernel.weights()):
        assert torch.equal(a, b)
    for seed, full in [(1, False), (2, True), (3, False)]:
        kjt = batch(seed, full=full)
        got, expected = step(pooled, kjt), step(per_slot, kjt)
        assert got.keys() == expected.keys()
        for key in expected:
            assert torch.allclose(got[key], expected[key], atol=1e-6), (seed, key)
        for a, b in zip(pooled.kernel.weights(), per_slot.kernel.weights()):
            assert torch.allclose(a, b, atol=1e-6), seed
        for a, b in zip(pooled.kernel.optimizer_states(), per_slot.kernel.optimizer_states()):
            assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-9) for k in a), seed
    moved = [not torch.equal(a, b) for a, b in zip(start, pooled.kernel.weights())]
    assert all(moved)  # every table trained (user, quotient/first, remainder/second)


def test_empty_slots_are_zeros_and_reads_of_no_row_leave_smaller_bags() -> None:
    tables = build(HalfRowsDoubleHashing(IDS["item_id"], DIM, rows=400))
    method = tables.methods["item_id"]
    assert tables.kernel is not None
    first, second = (tables.kernel.weights()[tables.kernel.table_names.index(f"item_id/{j}")].detach() for j in (0, 1))
    ids = torch.tensor([4, 5])
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["user_id", "item_id", "hist"], torch.tensor([1, 2, 4, 5, 4, 5]), torch.tensor([1, 1, 1, 1, 2, 0])
    )
    with torch.no_grad():
        out = tables(kjt)
    rows = method.kernel_rows(ids)
    expected = torch.stack([first[rows[0, 0]] + second[rows[1, 0]], first[rows[0, 1]]])  # id 5 (odd): one row
    assert torch.allclose(out.pooled["item_id"], expected)
    assert torch.allclose(out.sequences["hist"][0, :2], expected)
    assert out.masks["hist"].tolist() == [[True, True, False, False], [False] * 4]
    assert not out.sequences["hist"][0, 2:].any() and not out.sequences["hist"][1].any()


def test_pooled_reads_of_different_dims_are_refused() -> None:
    class PooledMixed(MixedDimensions):
        def pools_reads(self) -> bool:
            return True

    method = PooledMixed.from_options(IDS["item_id"], DIM, {}, budget=IDS["item_id"] * DIM // 10)
    with pytest.raises(PluginError, match="pools its reads in one bag, but they have different dims"):
        build(method)


def test_built_in_pooling_follows_the_combine() -> None:
    assert DoubleHashing(100, DIM, rows=20).pools_reads() and not DoubleHashing(100, DIM, rows=20, combine="concat").pools_reads()
    assert QuotientRemainder(100, DIM, remainder=10, combine="add").pools_reads()
    assert not QuotientRemainder(100, DIM, remainder=10).pools_reads()  # mult: a product, read per slot


class OwnCombineQuotientRemainder(QuotientRemainder):
    """QR whose combine runs per feature (no combine key): the reference for the batched combine."""

    def combine_key(self) -> None:
        return None


@pytest.mark.parametrize("combine", ["mult", "concat"])
def test_one_combine_over_the_features_of_methods_alike_equals_a_combine_per_feature(combine: str) -> None:
    def layout(cls: type) -> CompressedTables:
        torch.manual_seed(0)
        methods = {"user_id": cls(IDS["user_id"], DIM, remainder=30, combine=combine),
                   "item_id": cls(IDS["item_id"], DIM, remainder=50, combine=combine)}
        return CompressedTables(schema(), IDS, methods, TableOptimizer("rowwise_adagrad", lr=0.1))  # type: ignore[arg-type]

    batched, own = layout(QuotientRemainder), layout(OwnCombineQuotientRemainder)
    assert [u.features for u in batched.units] == [("user_id", "item_id", "hist")]
    assert [u.features for u in own.units] == [("user_id",), ("item_id",), ("hist",)]
    assert batched.kernel is not None and own.kernel is not None
    for seed, full in [(1, False), (2, True)]:
        kjt = batch(seed, full=full)
        got, expected = step(batched, kjt), step(own, kjt)
        for key in expected:
            assert torch.allclose(got[key], expected[key], atol=1e-6), (seed, key)
        for a, b in zip(batched.kernel.weights(), own.kernel.weights()):
            assert torch.allclose(a, b, atol=1e-6), seed


class OldSignatureConcat(DoubleHashing):
    """A plugin written against the earlier contract, ``combine(parts)``."""

    method_name = "old_signature_concat"

    def combine(self, parts):  # type: ignore[override]
        return torch.cat(list(parts), dim=-1)


def test_a_combine_of_the_earlier_signature_fails_naming_the_method() -> None:
    with pytest.raises(PluginError, match=r"compression method 'old_signature_concat' .*failed on a probe of 2 ids: TypeError: .*combine\(\) takes 2 positional arguments"):
        CompressedTables(schema(), IDS, {"item_id": OldSignatureConcat(IDS["item_id"], DIM, rows=400, combine="concat")})
