"""Shard one multiplexed table row-wise over 2 CPU ranks (torchrec DMP over gloo) and train it.

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 examples/shard_tables.py [OUT_DIR]

Every rank builds the same table (same seed), keeps only its block of rows (the full table
is freed once the shards have copied their rows) and trains on its own batches (fused rowwise
Adagrad, inside backward); then the shards are gathered into one table on rank 0, which saves
it as an artifact (safetensors + JSON) in OUT_DIR (runs/shard_tables).
"""

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from recsys_embed.artifacts import save_artifact
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.jobs.sharding import ShardedTables
from recsys_embed.tables import MultiplexedConfig, MultiplexedTables, TableOptimizer, kjt_from_ids

VOCAB = {"user": 1_000, "item": 2_000}
STEPS, BATCH = 40, 256


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same initial table on every rank
    schema = Schema([FeatureSpec(name, embedding_dim=16) for name in VOCAB], label=None)
    config = MultiplexedConfig(rows=10_000, chunk_dim=16)
    table = MultiplexedTables(schema, config, TableOptimizer(lr=0.1), vocab_sizes=VOCAB)
    full_bytes = table.memory_bytes()
    sharded = ShardedTables(table)  # copies this rank's rows and keeps only the table's input side
    del table
    spans: list = [None] * world  # (start, end) rows of every rank
    dist.all_gather_object(spans, sharded.local_rows()["shared"])
    assert spans[0][0] == 0 and spans[-1][1] == config.rows and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    print(f"rank {rank} holds rows [{spans[rank][0]}, {spans[rank][1]}) of {config.rows} rows "
          f"({sharded.local_parameters():,} of {config.rows * config.chunk_dim:,} parameters, "
          f"{sharded.memory_bytes():,} of {full_bytes:,} bytes with the optimizer state)", flush=True)
    generator, losses = torch.Generator().manual_seed(1 + rank), torch.zeros(STEPS)  # every rank its own data
    for step in range(STEPS):
        ids = {name: torch.randint(0, n, (BATCH,), generator=generator) for name, n in VOCAB.items()}
        clicks = ((ids["item"] < 500) | (ids["user"] < 100)).float()  # head items and heavy users click
        emb = sharded(kjt_from_ids(ids)).pooled
        loss = F.binary_cross_entropy_with_logits((emb["user"] + emb["item"]).sum(1), clicks)
        loss.backward()  # the fused optimizer updates this rank's rows here
        losses[step] = loss.detach() / world
    dist.all_reduce(losses)  # the mean over ranks
    gathered = sharded.gather()  # a collective: every rank sends its rows, rank 0 gets the full table
    if gathered is not None:
        tensors, layout = gathered.export_state()
        out_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/shard_tables"
        out = save_artifact(out_dir, tensors, {"schema": schema.to_dict(), "layout": layout})
        print(f"{world} ranks, {STEPS} steps of {BATCH} per rank: "
              f"loss {losses[:5].mean():.4f} -> {losses[-5:].mean():.4f}, "
              f"gathered {tensors['shared.weight'].shape[0]} rows (step {int(tensors['step'])}), saved to {out}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
