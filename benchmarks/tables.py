"""Training throughput of the table layouts, side by side in one process.

Forward + backward (+ optimizer update) lookups per second for F features x R rows x dim D,
batch B, one id per feature, one thread:

* ``raw_tbe``: fbgemm's TBE (F tables) with fused rowwise Adagrad on prepared (indices, offsets);
* ``raw_tbe_packed``: the same with the F tables packed into one (ids shifted beforehand), as
  ``FusedTables`` packs them: the kernel floor our layouts run on. Both run the kernel as
  ``FusedTables`` configures it, fbgemm's own bounds check off (the prepared ids are in range;
  our layouts check every id against its own table instead);
* ``raw_tbe_two_reads``: the packed kernel reading two rows per id (``2F`` slots) from a table
  of the budget's rows: the floor of a two-table method that combines its reads (double hashing
  and QR ``concat``); what QR ``mult`` would cost with its quotient table in the kernel (it keeps
  those few rows dense and reads the kernel once per id);
* ``raw_tbe_bag_of_two``: the same rows read as one bag of two rows per id (``F`` slots, the kernel
  sums them): the floor of a two-table method whose reads the kernel pools (double hashing
  ``sum``, QR ``add``: ``CompressionMethod.pools_reads``);
* ``torchrec_fused_ebc``: torchrec's ``FusedEmbeddingBagCollection`` (F tables, fused
  ``RowWiseAdagrad``: the same fbgemm kernel, unpacked, with fbgemm's default bounds check) from a
  ``KeyedJaggedTensor`` to per-feature tensors (``KeyedTensor.to_dict()``): the candidate
  backend for the per-feature layout;
* ``per_feature``: ``PerFeatureTables`` (same kernel) from a ``KeyedJaggedTensor`` to ``Embeddings``;
* ``per_feature_sgd``: the same with fused SGD, to compare like for like with the SGD loop below;
* ``multiplexed``: ``MultiplexedTables`` with the same parameters (one ``F*R`` x D table, chunk D,
  1 probe, so the same number of lookups), hashing included;
* ``embedding_bag_sgd`` / ``embedding_bag_adagrad``: a loop of F ``nn.EmbeddingBag(sparse=True)``
  and ``torch.optim.SGD`` / ``Adagrad``;
* ``compressed_<method>``: ``CompressedTables`` with every table group stored by compression
  method ``<method>`` at ``--budget`` (default 0.1: a tenth of the exact table's weights), for
  every registered method (``--methods``; built-in and installed plugins, ``exact`` included:
  the compressed layout's own overhead). Row methods run in the layout's one fused kernel
  (same fused rowwise Adagrad); computed methods, mixed dims' projections and QR ``mult``'s
  quotient factors also step their dense parameters with the Trainer's (fused) Adam.
  A method that cannot be built at the budget is listed with its error, not dropped. Its
  ``compression`` is that of the layout it trains, ``served_compression`` that of the layout it
  serves (``serving_layout()``; they differ for ``dpq``, which trains a query table, and ``lr2vq``, which
  trains a float latent table, each serving codes).
  Row methods (hashing, double hashing, QR, adaptive) aim at ``<= 1.3x`` the time of ``per_feature``.

Every contender gets the same upstream gradient per feature (column blocks of one ``[B, F*D]``
tensor, as a model that concatenates the embeddings hands them back). After a warm-up, the
contenders run round-robin, in a fresh random order each round, for ``--reps`` rounds (so a
noisy neighbour slows all of them alike). Each step is timed twice: wall clock and process CPU
time (user + system, all threads). Rates and ratios use the median CPU time, which a shared,
oversubscribed machine distorts far less than the wall clock; both are written, with the
minimum CPU time. Writes ``benchmarks/results/tables.json`` and ``.png``.

    python benchmarks/tables.py [--reps 40] [--rows 100000] [--batch 4096] [--methods all|none|hashing,qr,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode, PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    EmbeddingLocation,
    SplitTableBatchedEmbeddingBagsCodegen,
)
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.artifacts import versions
from recsys_embed.compression import CompressedTables, budget_parameters, compression_methods, method_class
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.jobs.trainer import dense_optimizer
from recsys_embed.tables.base import TableOptimizer
from recsys_embed.tables.multiplexed import MultiplexedConfig, MultiplexedTables
from recsys_embed.tables.per_feature import PerFeatureTables

RESULTS = Path(__file__).resolve().parent / "results"
LR = 0.01
# label -> (slower, faster, bound): time(slower) / time(faster) must be >= bound
TARGETS = {
    "raw_tbe / per_feature": ("raw_tbe", "per_feature", 1 / 1.3),
    "raw_tbe_packed / per_feature": ("raw_tbe_packed", "per_feature", 1 / 1.3),
    "torchrec_fused_ebc / per_feature": ("torchrec_fused_ebc", "per_feature", 1.0),
    "per_feature / multiplexed": ("per_feature", "multiplexed", 1 / 1.5),
    "embedding_bag_adagrad / per_feature": ("embedding_bag_adagrad", "per_feature", 3.0),
    "embedding_bag_sgd / per_feature_sgd": ("embedding_bag_sgd", "per_feature_sgd", 3.0),
    "embedding_bag_sgd / per_feature": ("embedding_bag_sgd", "per_feature", 3.0),
}
ROW_METHODS_WITHIN = {"hashing": 1.3, "double_hashing": 1.3, "qr": 1.3, "adaptive": 1.3}  # x the time of per_feature


def contenders(
    features: int, rows: int, dim: int, batch: int, batches: int, methods: list[str], budget: float
) -> tuple[dict[str, Callable[[int], None]], dict[str, dict]]:
    """Name -> ``step(i)`` running forward + backward (+ update) on prepared batch ``i % batches``,
    and per compression method its geometry (parameters, bytes) or the error that kept it out."""
    names = [f"f{i}" for i in range(features)]
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, rows, (features * batch,), generator=gen) for _ in range(batches)]
    kjts = [KeyedJaggedTensor(keys=names, values=v, lengths=torch.ones_like(v)) for v in ids]
    grad = torch.randn(batch, features * dim, generator=gen)
    grads = list(grad.split(dim, dim=1))
    offsets = torch.arange(features * batch + 1)
    optimizer = TableOptimizer("rowwise_adagrad", lr=LR)
    schema = Schema([FeatureSpec(n, embedding_dim=dim) for n in names], label=None)

    def raw_tbe(tables: int, table_rows: int = rows * features, slots: int = features) -> SplitTableBatchedEmbeddingBagsCodegen:
        return SplitTableBatchedEmbeddingBagsCodegen(
            embedding_specs=[(table_rows // tables, dim, EmbeddingLocation.HOST, ComputeDevice.CPU)] * tables,
            feature_table_map=[f * tables // slots for f in range(slots)],
            optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD,
            learning_rate=LR,
            pooling_mode=PoolingMode.SUM,
            device=torch.device("cpu"),
            bounds_check_mode=BoundsCheckMode.NONE,
        )

    raw, packed = raw_tbe(features), raw_tbe(1)
    shift = torch.arange(features).repeat_interleave(batch) * rows
    packed_ids = [v + shift for v in ids]
    # the kernel floor of a two-table method (QR, double hashing) at the budget: 2 reads per id
    budget_rows = features * budget_parameters(budget, rows, dim, "--budget") // dim
    two_reads = raw_tbe(1, budget_rows, 2 * features)
    two_ids = [torch.randint(0, budget_rows, (2 * features * batch,), generator=gen) for _ in range(batches)]
    two_offsets, two_grad = torch.arange(2 * features * batch + 1), torch.randn(batch, 2 * features * dim, generator=gen)
    bag_of_two = raw_tbe(1, budget_rows, features)
    bag_offsets = torch.arange(0, 2 * features * batch + 1, 2)
    per_feature = PerFeatureTables(schema, dict.fromkeys(names, rows), optimizer)
    per_feature_sgd = PerFeatureTables(schema, dict.fromkeys(names, rows), TableOptimizer("sgd", lr=LR))
    multiplexed = MultiplexedTables(schema, MultiplexedConfig.from_budget(features * rows * dim, chunk_dim=dim, probes=1), optimizer)
    fused_ebc = FusedEmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name=f"t_{n}", embedding_dim=dim, num_embeddings=rows, feature_names=[n]) for n in names],
        optimizer_type=RowWiseAdagrad,
        optimizer_kwargs={"lr": LR},
        device=torch.device("cpu"),
    )

    def ours(tables: nn.Module) -> Callable[[int], None]:
        def step(i: int) -> None:
            out = tables(kjts[i % batches])
            torch.autograd.backward(list(out.pooled.values()), grads)
        return step

    def dense_step(tables: CompressedTables) -> Callable[[int], None]:
        """``ours`` plus the Trainer's Adam step (fused) on the layout's dense parameters (computed
        methods, projections, QR ``mult``'s quotient tables)."""
        fused = set(tables.fused_parameters())
        dense = [p for p in tables.parameters() if p.requires_grad and p not in fused]
        if not dense:
            return ours(tables)
        opt, forward_backward = dense_optimizer("adam", [{"params": dense, "lr": LR}]), ours(tables)

        def step(i: int) -> None:
            forward_backward(i)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    def raw_step(i: int) -> None:
        raw(ids[i % batches], offsets).backward(grad)

    def packed_step(i: int) -> None:
        packed(packed_ids[i % batches], offsets).backward(grad)

    def fused_ebc_step(i: int) -> None:
        out = fused_ebc(kjts[i % batches]).to_dict()
        torch.autograd.backward([out[n] for n in names], grads)

    def two_reads_step(i: int) -> None:
        two_reads(two_ids[i % batches], two_offsets).backward(two_grad)

    def bag_of_two_step(i: int) -> None:
        bag_of_two(two_ids[i % batches], bag_offsets).backward(grad)

    def bag_loop(opt_cls: type[torch.optim.Optimizer]) -> Callable[[int], None]:
        bags = nn.ModuleList(nn.EmbeddingBag(rows, dim, mode="sum", sparse=True) for _ in names)
        opt = opt_cls(bags.parameters(), lr=LR)
        bag_offsets = torch.arange(batch)

        def step(i: int) -> None:
            per_feature_ids = ids[i % batches].view(features, batch)
            outs = [bag(per_feature_ids[f], bag_offsets) for f, bag in enumerate(bags)]
            torch.autograd.backward(outs, grads)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    compressed: dict[str, dict] = {}
    steps: dict[str, Callable[[int], None]] = {}
    exact_weights = features * rows * dim
    for method in methods:
        config = {n: {"method": method, "budget": budget} for n in names}
        try:
            layout = CompressedTables.from_options(schema, dict.fromkeys(names, rows), config, optimizer)
        except ValueError as error:  # a budget below the method's minimum (MethodConfigError), a broken plugin
            compressed[method] = {"error": str(error)}
            continue
        served = CompressedTables.from_options(schema, dict.fromkeys(names, rows), config).serving_layout()
        compressed[method] = {
            "parameters": layout.num_parameters(),
            "memory_bytes": layout.memory_bytes(),
            "compression": round(exact_weights / layout.num_parameters(), 2),
            "served_compression": round(exact_weights / served.num_parameters(), 2),
            "kernel_reads": len(layout.methods[names[0]].kernel_reads()),  # type: ignore[operator]  # 0: a computed method
            "pools_reads": bool(layout.methods[names[0]].kernel_reads() and layout.methods[names[0]].pools_reads()),  # type: ignore[operator]
        }
        steps[f"compressed_{method}"] = dense_step(layout)

    return {
        "raw_tbe": raw_step,
        "raw_tbe_packed": packed_step,
        "raw_tbe_two_reads": two_reads_step,
        "raw_tbe_bag_of_two": bag_of_two_step,
        "torchrec_fused_ebc": fused_ebc_step,
        "per_feature": ours(per_feature),
        "per_feature_sgd": ours(per_feature_sgd),
        "multiplexed": ours(multiplexed),
        "embedding_bag_sgd": bag_loop(torch.optim.SGD),
        "embedding_bag_adagrad": bag_loop(torch.optim.Adagrad),
        **steps,
    }, compressed


def measure(steps: dict[str, Callable[[int], None]], reps: int, warmup: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds per step of every contender, round-robin after ``warmup`` steps each."""
    for step in steps.values():
        for i in range(warmup):
            step(i)
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in steps}
    order = random.Random(0)
    for rep in range(reps):
        for name in order.sample(list(steps), len(steps)):
            step = steps[name]
            wall, cpu = time.perf_counter(), time.process_time()
            step(rep)
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["contenders"])
    rates = [result["contenders"][n]["lookups_per_s"] / 1e6 for n in names]
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.3 * len(names)))
    bars = ax.barh(names[::-1], rates[::-1], color="#4c72b0")
    ax.bar_label(bars, fmt="%.2f")
    c = result["config"]
    ax.set_xlabel("million lookups per CPU second (forward + backward + update), higher is better")
    ax.set_title(f"{c['features']} features x {c['rows']:,} rows x dim {c['dim']}, batch {c['batch']}, 1 thread")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=26)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4, help="distinct prepared batches, cycled")
    parser.add_argument("--methods", default="all", help="compression methods to time: all (registered and installed), none, or a comma list")
    parser.add_argument("--budget", type=float, default=0.1, help="compression budget of every table group (fraction of the exact table, or bytes)")
    parser.add_argument("--out", type=Path, default=RESULTS / "tables.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    methods = {"all": compression_methods(), "none": []}.get(args.methods, [m for m in args.methods.split(",") if m])
    for method in methods:
        method_class(method)  # an unknown name fails here, naming the installed ones

    load_before = os.getloadavg()
    steps, compressed = contenders(args.features, args.rows, args.dim, args.batch, args.batches, methods, args.budget)
    times = measure(steps, args.reps, args.warmup)
    lookups = args.features * args.batch
    cpu = {name: statistics.median(t["cpu"]) for name, t in times.items()}
    wall = {name: statistics.median(t["wall"]) for name, t in times.items()}
    targets = dict(TARGETS)
    for method, within in ROW_METHODS_WITHIN.items():
        if f"compressed_{method}" in times:
            targets[f"per_feature / compressed_{method}"] = ("per_feature", f"compressed_{method}", 1 / within)
    for method, info in compressed.items():
        name = f"compressed_{method}"
        if name in times:
            info["time_vs_per_feature"] = round(cpu[name] / cpu["per_feature"], 3)
            info["time_vs_multiplexed"] = round(cpu[name] / cpu["multiplexed"], 3)
            info["wall_time_vs_per_feature"] = round(wall[name] / wall["per_feature"], 3)
            floor = {1: "raw_tbe_packed", 2: "raw_tbe_bag_of_two" if info["pools_reads"] else "raw_tbe_two_reads"}.get(info["kernel_reads"])
            if floor is not None:  # the bare kernel making the same reads per id
                info["kernel_floor"], info["time_vs_kernel_floor"] = floor, round(cpu[name] / cpu[floor], 3)
    result = {
        "config": {k: getattr(args, k) for k in ("features", "rows", "dim", "batch", "reps", "warmup", "batches", "methods", "budget")},
        "metric": "median process CPU seconds per forward+backward+update step; wall clock alongside",
        "environment": {
            **versions(),
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "contenders": {
            name: {
                "cpu_median_ms": round(1e3 * cpu[name], 3),
                "cpu_min_ms": round(1e3 * min(t["cpu"]), 3),
                "wall_median_ms": round(1e3 * wall[name], 3),
                "wall_min_ms": round(1e3 * min(t["wall"]), 3),
                "lookups_per_s": round(lookups / cpu[name]),
                "lookups_per_wall_s": round(lookups / wall[name]),
            }
            for name, t in times.items()
        },
        "ratios": {
            label: {
                "speedup": round(cpu[slow] / cpu[fast], 3),
                "wall_speedup": round(wall[slow] / wall[fast], 3),
                "target_at_least": round(bound, 3),
                "met": cpu[slow] / cpu[fast] >= bound,
            }
            for label, (slow, fast, bound) in targets.items()
        },
        "compression": compressed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    plot(result, args.out.with_suffix(".png"))

    print(f"{'contender':<24} {'cpu ms':>8} {'wall ms':>8} {'Mlookups/cpu-s':>15} {'cpu time / per_feature':>23}")
    for name, stats in result["contenders"].items():
        print(
            f"{name:<24} {stats['cpu_median_ms']:>8.2f} {stats['wall_median_ms']:>8.2f} "
            f"{stats['lookups_per_s'] / 1e6:>15.2f} {cpu[name] / cpu['per_feature']:>23.2f}"
        )
    print(f"\n{'speedup (time of first / time of second)':<42} {'cpu':>6} {'wall':>6}  target")
    for label, r in result["ratios"].items():
        verdict = "met" if r["met"] else "NOT met"
        print(f"{label:<42} {r['speedup']:>6.2f} {r['wall_speedup']:>6.2f}  >= {r['target_at_least']:.2f} {verdict}")
    if compressed:
        print(f"\n{'method at budget ' + str(args.budget):<24} {'compression':>11} {'time / per_feature':>19} {'time / multiplexed':>19} {'time / kernel floor':>20}")
        for method, info in compressed.items():
            if "error" in info:
                print(f"{method:<24} not built: {info['error']}")
            else:
                floor = f"{info['time_vs_kernel_floor']:.2f} ({info['kernel_floor']})" if "kernel_floor" in info else "-"
                print(f"{method:<24} {info['compression']:>10.1f}x {info['time_vs_per_feature']:>19.2f} {info['time_vs_multiplexed']:>19.2f} {floor:>20}")
    print(f"load average before/after: {result['environment']['load_average_before_after']}; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
