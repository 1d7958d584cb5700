"""Sequence lookups in fbgemm's kernel: one bag per history position (what the layouts do) against
``PoolingMode.NONE`` (one output row per id, torchrec's ``EmbeddingCollection``).

DIN's batch: ``--categorical`` one-id features and two histories of up to ``--max-len`` ids
(lengths uniform in ``[0, 2 * --mean-len]``), one table of ``--rows`` x ``--dim``, fused rowwise
Adagrad, one thread. ``positions``: :class:`FusedTables` with ``max_len`` slots per history
(``PerFeatureTables``' kernel; output ``[B, (C + 2 L) D]``, padding positions are empty bags);
``pooling_none``: fbgemm's TBE with ``PoolingMode.NONE`` (output ``[ids, D]``, no padding). Both
start from the same weights and get the same upstream gradient on every real id; after the
timed rounds the weights must be equal (checked, the run fails otherwise). Forward + backward
(the update runs inside backward), contenders alternating, median process CPU time. Writes
``benchmarks/results/sequence_pooling.json`` and ``.png``.

    python benchmarks/sequence_pooling.py [--rounds 10] [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode, PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    EmbeddingLocation,
    SplitTableBatchedEmbeddingBagsCodegen,
)

from recsys_embed.artifacts import versions
from recsys_embed.tables.base import FusedTables, TableOptimizer
from recsys_embed.tables.jagged import offsets_of, sequence_grid

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--categorical", type=int, default=9)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--mean-len", type=int, default=13)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS / "sequence_pooling.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    b, c, length, dim = args.batch, args.categorical, args.max_len, args.dim
    lengths = torch.randint(0, 2 * args.mean_len + 1, (b,), generator=gen).clamp(max=length)
    n = int(lengths.sum())
    cat_ids = torch.randint(0, args.rows, (c * b,), generator=gen)
    hists = [torch.randint(0, args.rows, (n,), generator=gen) for _ in range(2)]

    positions = FusedTables([args.rows], [dim], [0] * (c + 2 * length), TableOptimizer(lr=0.05))
    grids = [sequence_grid(h, lengths, length) for h in hists]  # [L, B] ids and presence
    pos_ids = torch.cat([cat_ids] + [g[p] for g, p in grids])
    pos_offsets = offsets_of(torch.cat([torch.ones(c * b, dtype=torch.int64)] + [p.reshape(-1).long() for _, p in grids]))
    none = SplitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=[(args.rows, dim, EmbeddingLocation.HOST, ComputeDevice.CPU)],
        feature_table_map=[0] * (c + 2), optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=0.05,
        pooling_mode=PoolingMode.NONE, bounds_check_mode=BoundsCheckMode.NONE,
    )  # fmt: skip
    with torch.no_grad():
        none.split_embedding_weights()[0].copy_(positions.weights()[0])
    none_ids = torch.cat([cat_ids, *hists])
    none_offsets = offsets_of(torch.cat([torch.ones(c * b, dtype=torch.int64), lengths, lengths]))

    # one upstream gradient per real id, laid out for each side
    grad_rows = torch.randn(none_ids.numel(), dim, generator=gen)
    none_grad = grad_rows
    pos_grad = torch.zeros(b, (c + 2 * length) * dim)
    pos_grad[:, : c * dim] = grad_rows[: c * b].view(c, b, dim).transpose(0, 1).reshape(b, c * dim)
    for s, (_, present) in enumerate(grids):
        block = torch.zeros(b, length, dim)
        block[present.T] = grad_rows[c * b + s * n : c * b + (s + 1) * n]  # sample-major, as the jagged ids
        pos_grad[:, (c + s * length) * dim : (c + (s + 1) * length) * dim] = block.reshape(b, -1)

    steps = {
        "positions": lambda: positions(pos_ids, pos_offsets).backward(pos_grad),
        "pooling_none": lambda: none(none_ids, none_offsets).backward(none_grad),
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    load = os.getloadavg()[0]
    for r in range(args.rounds):
        for name in list(steps)[:: 1 if r % 2 else -1]:
            start = time.process_time()
            steps[name]()
            times[name].append(time.process_time() - start)
    same = torch.allclose(positions.weights()[0], none.split_embedding_weights()[0], rtol=0, atol=1e-6)
    if not same:
        raise RuntimeError("the two arrangements gave different weights after the same updates")
    median = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    result = {
        "config": vars(args) | {"out": str(args.out)},
        "ids_per_batch": none_ids.numel(),
        "bags_positions": pos_offsets.numel() - 1,
        "median_cpu_ms": {k: round(v, 2) for k, v in median.items()},
        "positions_speedup": round(median["pooling_none"] / median["positions"], 2),
        "same_weights_after_updates": same,
        "environment": {**versions(), "cpus": os.cpu_count(), "threads": 1,
                        "load_average_before_after": [round(load, 2), round(os.getloadavg()[0], 2)]},  # fmt: skip
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.rename(args.out)
    _plot(median, args.out.with_suffix(".png"))
    print(f"positions {median['positions']:.1f} ms, pooling NONE {median['pooling_none']:.1f} ms a step "
          f"(forward + backward, median CPU): positions {result['positions_speedup']}x; same weights: {same}")  # fmt: skip
    return result


def _plot(median: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.barh(list(median), list(median.values()), color=["tab:blue", "tab:gray"])
    ax.set_xlabel("ms per forward + backward (median CPU)")
    ax.set_title("sequence lookups: position bags vs PoolingMode.NONE")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    tmp.rename(path)


if __name__ == "__main__":
    main()
