"""Shards tables over the ranks of ``torchrun`` (gloo, CPU) and compares them with the
unsharded layouts; run by tests/test_sharding.py as a real subprocess.

usage: torchrun --standalone --nproc_per_node 2 sharding_script.py OUT_DIR
The layouts take one unsharded step first, so the shards load trained weights and optimizer
state: from the layout itself, or (``state`` cases) from its exported tensors into a layout
built with ``storage=False``. Each rank writes OUT_DIR/rank<r>.json with, per case: the rows
this rank holds, the bytes of every tensor the sharded module holds, the largest difference
between the sharded and unsharded forward on its batch, and after STEPS training steps, on
rank 0, the largest differences between the gathered state and an unsharded run on the
batches of all ranks with the mean of their losses (torchrec divides embedding gradients by
the world size, as DDP averages dense ones).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.jobs.sharding import ShardedTables, ShardingConfig
from recsys_embed.tables import (
    Embeddings, MultiplexedConfig, MultiplexedTables, PerFeatureTables, TableOptimizer, kjt_from_ids,
)

SCHEMA = Schema([
    FeatureSpec("a", embedding_dim=8),
    FeatureSpec("b", embedding_dim=4),
    FeatureSpec("hist_a", kind="sequence", table="a", max_len=4, embedding_dim=8),
])
# tables of 100s of kB, so that a full copy on a rank would stand out of the metadata
VOCAB = {"a": 6_001, "b": 1_300}
BATCH, STEPS = 16, 4
OPTIMIZER = TableOptimizer("rowwise_adagrad", lr=0.3)
MULTIPLEXED = MultiplexedConfig(rows=20_011, chunk_dim=4, probes=1, table_probes={"a": 2})  # an uneven split


def multiplexed() -> MultiplexedTables:
    return MultiplexedTables(SCHEMA, MULTIPLEXED, OPTIMIZER)


def per_feature() -> PerFeatureTables:
    return PerFeatureTables(SCHEMA, VOCAB, OPTIMIZER)


# case -> (how to build the layout, sharding type, shard from the layout or from its exported state)
CASES = {
    "multiplexed": (multiplexed, "row_wise", "layout"),
    "multiplexed_state": (multiplexed, "row_wise", "state"),
    "per_feature": (per_feature, "row_wise", "layout"),
    "per_feature_state": (per_feature, "row_wise", "state"),
    "per_feature_table_wise": (per_feature, "table_wise", "layout"),
}


def batch(step: int, rows: slice):
    """Batch ``step`` of the whole world (``world * BATCH`` samples), cut to ``rows``."""
    g = torch.Generator().manual_seed(step)
    total = BATCH * dist.get_world_size()
    hist = torch.randint(0, VOCAB["a"], (total, 4), generator=g)
    hist[torch.rand(total, 4, generator=g) < 0.3] = -1  # padding: sequences of 0-4 ids
    ids = {name: torch.randint(0, VOCAB[name], (total,), generator=g) for name in ("a", "b")}
    ids["hist_a"] = hist
    return kjt_from_ids({name: t[rows] for name, t in ids.items()}, padding_id=-1)


def loss_of(emb: Embeddings) -> torch.Tensor:
    """A loss that sums over samples, so the ranks' losses add up to the whole batch's."""
    pooled = sum(((x - 0.1 * (i + 1)) ** 2).sum() for i, x in enumerate(emb.pooled.values()))
    return pooled + sum((x.sum(-1) * m).square().sum() for x, m in zip(emb.sequences.values(), emb.masks.values()))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys(), (a.keys(), b.keys())
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def held_bytes(sharded: ShardedTables) -> int:
    """Bytes of the distinct storages (meta tensors allocate none) of every tensor the sharded
    module holds: its parameters and buffers (torchrec's fbgemm kernels included), its fused
    optimizer's state, and the parameters and buffers of its input-side layout."""
    tensors = [*sharded.parameters(), *sharded.buffers(), *sharded.layout.parameters(), *sharded.layout.buffers()]
    for states in sharded.dmp.fused_optimizer.state_dict()["state"].values():
        for state in states.values():
            tensors += [shard.tensor for shard in state.local_shards()]  # ShardedTensors
    storages = {}
    for tensor in tensors:
        if not tensor.is_meta:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def run_case(make, sharding_type: str, source: str) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = slice(rank * BATCH, (rank + 1) * BATCH)
    everything = slice(0, world * BATCH)
    layouts = []
    for _ in range(2):  # the reference and the layout to shard: same weights, one unsharded step
        torch.manual_seed(0)
        layouts.append(make())
        (loss_of(layouts[-1](batch(100, everything))) / world).backward()  # momentum and step are not fresh
    reference, layout = layouts
    if source == "layout":
        sharded = ShardedTables(layout, ShardingConfig(sharding_type))
    else:  # as from an artifact: the unsharded tensors and a layout without storage
        tensors, config = layout.export_state()
        inputs = type(layout).from_config(SCHEMA, config, storage=False)
        sharded = ShardedTables(inputs, ShardingConfig(sharding_type), state=tensors)
        del tensors
    del layouts, layout
    initial, _ = reference.export_state()

    with torch.no_grad():
        local, expected = sharded(batch(0, mine)), reference(batch(0, mine))
    forward = max(max_diff(local.pooled, expected.pooled), max_diff(local.sequences, expected.sequences))
    masks_equal = all(torch.equal(local.masks[k], expected.masks[k]) for k in expected.masks)

    for step in range(STEPS):
        loss_of(sharded(batch(step, mine))).backward()
        (loss_of(reference(batch(step, everything))) / world).backward()
    result = {
        "local_rows": sharded.local_rows(),
        "local_parameters": sharded.local_parameters(),
        "memory_bytes": sharded.memory_bytes(),
        "held_bytes": held_bytes(sharded),
        "table_rows": dict(zip(reference.kernel.table_names, reference.kernel.rows)),
        "table_dims": dict(zip(reference.kernel.table_names, reference.kernel.dims)),
        "forward_max_diff": forward,
        "masks_equal": masks_equal,
    }
    gathered = sharded.gather()
    result["gathered"] = gathered is not None
    if gathered is not None:
        trained, _ = gathered.export_state()
        final, _ = reference.export_state()
        result["trained_max_diff"] = {key: max_diff({key: trained[key]}, {key: final[key]}) for key in final}
        result["weights_moved"] = {k: max_diff({k: initial[k]}, {k: final[k]}) for k in final if k.endswith(".weight")}
        result["lr_equal"] = gathered.state_config()["optimizer"] == reference.state_config()["optimizer"]
    return result


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    results = {name: run_case(*case) for name, case in CASES.items()}
    Path(sys.argv[1], f"rank{dist.get_rank()}.json").write_text(json.dumps(results, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
