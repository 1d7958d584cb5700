"""How BERT4Rec's tied item table reaches a fused-optimizer layout: one training step, four ways.

* ``dense``: the item table is an ``nn.Embedding`` updated by AdamW with the rest of the model
  (the former sequential stack's arrangement): inputs ``E[ids]``, output layer ``E``.
* ``one_read`` (what ``NextItemModel`` does): ``E = tables.table_vectors("items")``, a copy of
  the per_feature layout's rows whose gradient the fused row-wise Adagrad applies in backward
  (the kernel's update, for all rows at once); inputs ``E[ids]``, output layer ``E``; autograd
  sums both gradients per row, each row is updated once per step.
* ``kernel_read``: as ``one_read``, but ``E`` is every row read through fbgemm's kernel (one id
  per bag, spread over the table's slots), its backward the kernel's.
* ``two_reads``: the inputs come from the layout's ``forward`` (the batch's ids through the
  kernel) and the output layer from ``table_vectors``: two updates of the read rows per step.

Same model, batch (``--batch`` sequences of ``--max-len`` ids over ``--items`` items), seed;
the variants run interleaved in rounds in one process, one intra-op thread, and the median step
time of each is reported with its ratio to ``one_read``. Writes
``benchmarks/results/bert4rec_table_read.json`` and ``.png``.

    python benchmarks/bert4rec_table_read.py [--items 2000] [--rounds 15] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.artifacts import versions
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.models import BERT4Rec, BERT4RecConfig, cloze_mask
from recsys_embed.tables import PerFeatureTables, TableOptimizer
from recsys_embed.tables.base import FusedTables
from recsys_embed.tables.jagged import offsets_of, sequence_grid

RESULTS = Path(__file__).resolve().parent / "results"


def kernel_read(kernel: FusedTables, table: int) -> torch.Tensor:
    """Every row of ``table`` through the kernel, one id per bag over the table's slots, ``[rows, dim]``."""
    slots = [s for s, t in enumerate(kernel.slot_tables) if t == table]
    count, n = kernel.rows[table], len(slots)
    batch = -(-count // n)
    lengths = torch.zeros(len(kernel.slot_tables), batch, dtype=torch.int64)
    lengths[slots] = (torch.arange(n * batch) < count).to(torch.int64).view(n, batch)
    flat = kernel(torch.arange(count), offsets_of(lengths.reshape(-1)), validated=True)  # [batch, n * dim]: one table
    return flat.view(batch, n, -1).transpose(0, 1).reshape(n * batch, -1)[:count]


def variants(args: argparse.Namespace) -> dict[str, Callable[[torch.Tensor, torch.Tensor], float]]:
    """Name -> one training step on (values, lengths) of a jagged batch, returning the loss."""
    config = BERT4RecConfig(max_len=args.max_len, dim=args.dim, num_layers=2, num_heads=2, dropout=0.1)
    rows = args.items + 2
    schema = Schema([FeatureSpec("items", kind="sequence", max_len=args.max_len, embedding_dim=args.dim)], label=None)
    steps = {}
    for name in ("dense", "one_read", "kernel_read", "two_reads"):
        torch.manual_seed(0)
        model = BERT4Rec(config, rows)
        if name == "dense":
            table = nn.Embedding(rows, args.dim)
            optimizer = torch.optim.AdamW([*model.parameters(), table.weight], lr=1e-3, weight_decay=0.01)
        else:
            tables = PerFeatureTables(schema, {"items": rows}, TableOptimizer("rowwise_adagrad", lr=0.05))
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

        def step(values: torch.Tensor, lengths: torch.Tensor, name: str = name, model: BERT4Rec = model,
                 optimizer: torch.optim.Optimizer = optimizer, table: nn.Module = table if name == "dense" else tables) -> float:
            grid, present = sequence_grid(values, lengths, args.max_len)
            ids, mask = grid.T, present.T
            if name == "dense":
                vectors = table.weight
                items = vectors[ids]
            elif name in ("one_read", "kernel_read"):
                vectors = table.table_vectors("items") if name == "one_read" else kernel_read(table.kernel, 0)
                items = vectors[ids]
            else:
                kjt = KeyedJaggedTensor.from_lengths_sync(keys=["items"], values=values, lengths=lengths)
                items = table(kjt).sequences["items"]
                vectors = table.table_vectors("items")
            loss = model.cloze_loss(items, mask, cloze_mask(mask, 0.2), ids, vectors)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        steps[name] = step
    return steps


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["median_ms"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(names, [result["median_ms"][n] for n in names], color=["#999999", "#4c72b0", "#dd8452", "#c44e52"])
    ax.bar_label(bars, fmt="%.1f ms", fontsize=8)
    ax.set(ylabel="median training step (ms)", title=f"BERT4Rec step, {result['config']['items']:,} items, 1 thread")
    fig.tight_layout()
    fig.savefig(path.with_suffix(".tmp.png"), dpi=120)
    plt.close(fig)
    path.with_suffix(".tmp.png").replace(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS / "bert4rec_table_read.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(1)
    steps = variants(args)
    times: dict[str, list[float]] = {name: [] for name in steps}
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, step in steps.items():  # interleaved: every variant sees the same machine load
            lengths = torch.randint(3, 2 * args.max_len, (args.batch,), generator=generator)
            values = torch.randint(2, args.items + 2, (int(lengths.sum()),), generator=generator)
            start = time.perf_counter()
            for _ in range(args.steps):
                step(values, lengths)
            times[name].append(1000 * (time.perf_counter() - start) / args.steps)
    median = {name: round(statistics.median(t), 2) for name, t in times.items()}
    result = {
        "config": vars(args) | {"out": str(args.out)},
        "median_ms": median,
        "ratio_to_one_read": {name: round(m / median["one_read"], 3) for name, m in median.items()},
        "environment": {**versions(), "threads": 1, "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    plot(result, args.out.with_suffix(".png"))
    print("  ".join(f"{n} {m:.1f} ms ({result['ratio_to_one_read'][n]:.2f}x)" for n, m in median.items()) + f"; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
