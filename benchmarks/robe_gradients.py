"""ROBE's shared arrays trained with dense gradients (what :class:`~recsys_embed.compression.robe.RandomOffsetBlock`
does) against sparse ones, forward + backward + update.

The tables benchmark's shape: ``--groups`` table groups of ``--rows`` ids x ``--dim``, each a ROBE
array at ``--budget`` of the exact table (``S = budget * rows * dim`` weights, chunk ``Z``), a
batch of ``--batch`` one-id bags per group, one thread. ``dense``: ``array.index_select`` (its
backward one ``index_add`` into a dense ``[S]`` gradient) and ``torch.optim.Adam`` over all arrays
(the layout user's dense optimizer); ``sparse``: ``F.embedding(..., sparse=True)`` on the same
array as ``[S, 1]`` (a sparse COO gradient of the rows read) and ``torch.optim.SparseAdam`` (lazy
Adam: only the rows read move). Both start from the same arrays and give the same vectors
(checked). Contenders alternate, median process CPU time a step. Writes
``benchmarks/results/robe_gradients.json`` and ``.png``.

    python benchmarks/robe_gradients.py [--rounds 20] [--groups 26]
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
import torch.nn.functional as F

from recsys_embed.artifacts import versions
from recsys_embed.compression import RandomOffsetBlock, budget_parameters

RESULTS = Path(__file__).resolve().parent / "results"


def sparse_lookup(robe: RandomOffsetBlock, rows: torch.nn.Parameter, ids: torch.Tensor) -> torch.Tensor:
    """ROBE's vectors read from ``rows`` (``[S, 1]``, the array) with a sparse gradient."""
    index, signs = robe.positions(ids)
    return (F.embedding(index, rows, sparse=True).view(-1, robe.chunks, robe.chunk) * signs).view(-1, robe.dim)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=26)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "robe_gradients.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    size = budget_parameters(args.budget, args.rows, args.dim, "--budget")
    methods = [RandomOffsetBlock.from_options(args.rows, args.dim, {"salt": f"g{g}"}, size) for g in range(args.groups)]
    rows = [torch.nn.Parameter(m.array.detach().clone()[:, None]) for m in methods]
    dense_opt = torch.optim.Adam([m.array for m in methods], lr=1e-3)
    sparse_opt = torch.optim.SparseAdam(rows, lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    batches = [[torch.randint(0, args.rows, (args.batch,), generator=gen) for _ in methods] for _ in range(args.rounds)]
    grads = torch.randn(args.batch, args.dim, generator=gen)

    with torch.no_grad():
        same = all(torch.equal(m.lookup(i), sparse_lookup(m, r, i)) for m, r, i in zip(methods, rows, batches[0]))
    if not same:
        raise RuntimeError("dense and sparse reads gave different vectors")

    def step(lookup: Callable[[int, torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer, ids: list[torch.Tensor]) -> None:
        optimizer.zero_grad()
        torch.cat([lookup(g, i) for g, i in enumerate(ids)], dim=1).backward(grads.repeat(1, args.groups))
        optimizer.step()

    steps = {
        "dense": lambda ids: step(lambda g, i: methods[g].lookup(i), dense_opt, ids),
        "sparse": lambda ids: step(lambda g, i: sparse_lookup(methods[g], rows[g], i), sparse_opt, ids),
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    load = os.getloadavg()[0]
    for r, ids in enumerate(batches):
        for name in list(steps)[:: 1 if r % 2 else -1]:
            start = time.process_time()
            steps[name](ids)
            times[name].append(time.process_time() - start)
    median = {k: statistics.median(v[1:]) * 1e3 for k, v in times.items()}  # the first round warms up
    result = {
        "config": vars(args) | {"out": str(args.out)},
        "array_weights_per_group": size,
        "chunk": methods[0].chunk,
        "median_cpu_ms": {k: round(v, 2) for k, v in median.items()},
        "lookups_per_s": {k: round(args.groups * args.batch / v * 1e3) for k, v in median.items()},
        "dense_speedup": round(median["sparse"] / median["dense"], 2),
        "same_vectors": same,
        "environment": {**versions(), "cpus": os.cpu_count(), "threads": 1,
                        "load_average_before_after": [round(load, 2), round(os.getloadavg()[0], 2)]},  # fmt: skip
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.rename(args.out)
    _plot(median, args.out.with_suffix(".png"), args.groups)
    print(f"ROBE, {args.groups} groups x {args.batch} ids: dense {median['dense']:.1f} ms, sparse {median['sparse']:.1f} ms "
          f"a step (forward + backward + update, median CPU): dense {result['dense_speedup']}x")  # fmt: skip
    return result


def _plot(median: dict[str, float], path: Path, groups: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.barh(list(median), list(median.values()), color=["tab:blue", "tab:gray"])
    ax.set_xlabel("ms per forward + backward + update (median CPU)")
    ax.set_title(f"ROBE arrays ({groups} groups): dense vs sparse gradients")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    tmp.rename(path)


if __name__ == "__main__":
    main()
