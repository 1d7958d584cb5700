"""The inputs of one batch, computed once: what a layout's kernel reads, the sequence masks its
output carries, and which row each output slot read.

A fused layout's kernel reads ``indices`` ``[N]`` in bags ``offsets`` ``[S * B + 1]``, slot-major
then sample: one slot per (feature, probe) and, for a sequence feature, per (position, probe),
position p holding the p-th of the row's most recent ``max_len`` ids (a pooled sequence has one
slot holding them all). :func:`batch_inputs` walks the batch's ``KeyedJaggedTensor`` once and
builds them; forward, mini-batch aware L2 (:meth:`BatchInputs.slot_rows`), pruning masks and
sharding then share this one result (:class:`BatchMemo` keeps it for the batch).

Probes: a layout that reads ``k_t`` hashed rows per id (multiplexed) passes ``seeds`` (table
group -> ``[k_t]`` int64) and ``buckets``; probe j of id v reads ``bucket_torch(v ^ seed_j, 0,
buckets)``. Without seeds an id reads its own row (k = 1).

Example (two samples; the second has an empty history)::

    >>> from recsys_embed.features import FeatureSpec
    >>> features = [FeatureSpec("item"), FeatureSpec("hist", kind="sequence", table="item", max_len=2)]
    >>> kjt = KeyedJaggedTensor.from_lengths_sync(["item", "hist"], torch.tensor([5, 7, 1, 2, 3]),
    ...                                           torch.tensor([1, 1, 3, 0]))
    >>> inputs = batch_inputs(kjt, features, {"item": 10})
    >>> inputs.indices.tolist(), inputs.offsets.tolist()   # slots: item, hist@0, hist@1
    ([5, 7, 2, 3], [0, 1, 2, 3, 3, 4, 4])
    >>> inputs.masks["hist"].tolist(), inputs.slot_rows("hist").squeeze(-1).tolist()
    ([[True, True], [False, False]], [[2, 3], [-1, -1]])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.features import FeatureSpec
from recsys_embed.hashing import bucket_torch
from recsys_embed.tables.jagged import check_ids, most_recent, offsets_of, sequence_grid, single_ids

NO_ROW = -1  # an empty bag or a sequence's padding position reads no row


@dataclass
class BatchInputs:
    """One batch's kernel inputs. ``masks``: sequence -> ``[B, L]`` bool (pooled: kept lengths ``[B]``).
    ``places``: feature -> ``(start, present, bags)``: its ids are ``indices[start:]``, one per
    True of ``present`` (``[k, B]`` categorical, ``[L, k, B]`` sequence, row-major; ``None`` for a
    pooled sequence), and ``bags`` ``[B]`` its bag lengths (``None`` for a sequence).
    ``one_per_bag``: known to hold one id in every bag (the usual CTR batch), no check needed."""

    indices: torch.Tensor
    offsets: torch.Tensor
    masks: dict[str, torch.Tensor]
    places: dict[str, tuple[int, torch.Tensor | None, torch.Tensor | None]]
    one_per_bag: bool = False

    def slot_rows(self, feature: str) -> torch.Tensor:
        """The kernel row each output slot of ``feature`` read: ``[B, k]`` (pooled) or ``[B, L, k]``
        (sequence), ``-1`` where none. Raises ``ValueError`` where an output is a sum of rows."""
        start, present, bags = self.places[feature]
        if present is None:
            raise ValueError(
                f"feature {feature!r}: its sequence is pooled in the kernel (pool_sequences=True), so its output "
                "is a mean of rows, not one row per position; build the layout with pool_sequences=False"
            )
        longest = int(bags.max()) if bags is not None and bags.numel() else 0
        if longest > 1:
            raise ValueError(
                f"feature {feature!r}: categorical bags must hold at most one id (its output is then one row), "
                f"got a bag of {longest}"
            )
        read = self.indices[start : start + int(present.sum())]
        rows = torch.full(present.shape, NO_ROW, dtype=torch.int64, device=read.device).masked_scatter(present, read)
        return (rows.T if rows.dim() == 2 else rows.permute(2, 0, 1)).contiguous()


def batch_inputs(
    kjt: KeyedJaggedTensor,
    features: Sequence[FeatureSpec],
    limits: Mapping[str, int | None],
    seeds: Mapping[str, torch.Tensor] | None = None,
    buckets: int = 0,
    pool_sequences: bool = False,
) -> BatchInputs:
    """The :class:`BatchInputs` of ``kjt`` for ``features`` in slot order; ids of table group t must
    lie in ``[0, limits[t])`` (``None``: any id >= 0), else ``IndexError`` naming the feature."""
    names = [f.name for f in features]
    probes = {f.name: 1 if seeds is None else seeds[f.table].numel() for f in features}  # type: ignore[index]
    single = None if any(f.is_sequence for f in features) else single_ids(kjt, names)
    if single is not None:  # [F, B], one id per bag: the usual CTR batch, no split
        bound = torch.tensor([limits[f.table] or 2**63 - 1 for f in features], device=single.device)  # type: ignore[index]
        lo, hi = single.aminmax(dim=1)
        if bool(((lo < 0) | (hi >= bound)).any()):
            for spec, ids in zip(features, single):
                check_ids(spec.name, ids, limits[spec.table])  # type: ignore[index]
        batch = single.shape[1]
        if seeds is not None:
            slot_seeds = torch.cat([seeds[f.table] for f in features])  # type: ignore[index]
            feature_of = torch.tensor([i for i, n in enumerate(names) for _ in range(probes[n])], device=single.device)
            single = bucket_torch(single[feature_of] ^ slot_seeds[:, None], 0, buckets)
        present = torch.ones((1, batch), dtype=torch.bool, device=single.device)
        places, start = {}, 0
        for name in names:
            places[name] = (start, present.expand(probes[name], batch), None)
            start += probes[name] * batch
        return BatchInputs(single.reshape(-1), torch.arange(single.numel() + 1, device=single.device), {}, places, one_per_bag=True)
    by_key = kjt.to_dict()
    ids, lengths, masks, places, start = [], [], {}, {}, 0
    for spec in features:
        if spec.name not in by_key:
            raise KeyError(f"batch has no sparse feature {spec.name!r}; it has {kjt.keys()}")
        jagged, k = by_key[spec.name], probes[spec.name]
        values, bags = jagged.values().to(torch.int64), jagged.lengths().to(torch.int64)
        check_ids(spec.name, values, limits[spec.table])  # type: ignore[index]
        if spec.is_sequence and pool_sequences:  # one bag per sample, k = 1
            kept, masks[spec.name] = most_recent(values, bags, spec.max_len)  # type: ignore[arg-type]
            present, lengths_k, ids_k, probe_k = None, masks[spec.name], kept, None
        elif spec.is_sequence:  # slots (position p, probe j), each over the batch
            grid, at = sequence_grid(values, bags, spec.max_len)  # type: ignore[arg-type]
            masks[spec.name] = at.T.contiguous()
            present = at[:, None, :].expand(at.shape[0], k, at.shape[1])
            ids_k = grid[:, None, :].expand(present.shape)[present] if k > 1 else grid[at]
            probe_k = torch.arange(k, device=values.device)[None, :, None].expand(present.shape)[present] if k > 1 else None
            lengths_k = present.reshape(-1).to(torch.int64)
        else:  # slots (probe j), each over the batch
            present = (bags == 1)[None].expand(k, bags.numel())
            ids_k, lengths_k = (values, bags) if k == 1 else (values.repeat(k), bags.repeat(k))
            probe_k = torch.arange(k, device=values.device).repeat_interleave(values.numel()) if k > 1 else None
        places[spec.name] = (start, present, None if spec.is_sequence else bags)
        start += ids_k.numel()
        ids.append(ids_k if seeds is None else ids_k ^ seeds[spec.table][0 if probe_k is None else probe_k])  # type: ignore[index]
        lengths.append(lengths_k)
    indices = torch.cat(ids)
    if seeds is not None:  # bucket_torch(v ^ s, 0, M) == bucket_torch(v, s, M): one hash call for every slot
        indices = bucket_torch(indices, 0, buckets)
    return BatchInputs(indices, offsets_of(torch.cat(lengths)), masks, places)


class BatchMemo:
    """The inputs of the last batch a layout saw, so forward, mini-batch aware L2 and pruning walk
    one ``KeyedJaggedTensor`` once (keyed by the object; a new batch replaces it)."""

    def __init__(self) -> None:
        self._kjt: KeyedJaggedTensor | None = None
        self._inputs: BatchInputs | None = None

    def get(self, kjt: KeyedJaggedTensor, build: Callable[[KeyedJaggedTensor], BatchInputs]) -> BatchInputs:
        if self._kjt is not kjt or self._inputs is None:
            self._inputs, self._kjt = build(kjt), kjt
        return self._inputs
