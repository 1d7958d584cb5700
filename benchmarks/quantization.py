"""Post-training quantization: lookup speed, bytes and AUC of fp32 vs fp16 / int8 / int4 / int2 rows.

**Speed and bytes** (the tables benchmark's shape: ``--features`` 26 x ``--rows`` 100k rows x
dim 16, batch 4096, one id per feature, one thread): forward-only lookups per CPU second, as a
scoring job reads tables (``no_grad``, pooled ``Embeddings`` out, fp32): the per-feature layout
in fp32 (its fused training kernel's forward) and ``quantize(layout, bits)`` for each bits
(fbgemm's quantized CPU kernel, fp32 output). The contenders run round-robin in a fresh random
order each round after a warm-up (``tables.measure``); rates use the median process CPU time.
Bytes are the tables' storage: fp32 weights (``rows x dim x 4``, optimizer state left out, as a
served model holds it) against the quantized layout's ``memory_bytes()`` (codes, fp16 scale and
bias per int row, padding, fbgemm's 128-byte alignment).

**Quality**: each ``--models`` (MLP and DIN) trained once on the synthetic CTR data (1M rows
split by time, ``benchmarks/quality.py``'s settings: one epoch), its artifact quantized to every
bits (``jobs.quantize.quantize_model``) and evaluated on the test split; the AUC and logloss
change against the fp32 artifact. Targets (issue 16): int8 loses at most 0.001 test AUC, int4 at
most 0.003.

Writes ``benchmarks/results/quantization.json`` and ``.png``.

    python benchmarks/quantization.py [--reps 40] [--rows 1000000] [--models mlp din]
    python benchmarks/quantization.py --smoke --out /tmp/quantization.json   # tiny, for the tests
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_embed.artifacts import versions
from recsys_embed.compression import quantize
from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.jobs.ctr import evaluate
from recsys_embed.jobs.quantize import quantize_model
from recsys_embed.tables.per_feature import PerFeatureTables

HERE = Path(__file__).resolve().parent
BITS = (16, 8, 4, 2)
AUC_LOSS_TARGETS = {8: 0.001, 4: 0.003}


def _script(name: str) -> Any:
    """``benchmarks/NAME.py`` as module ``benchmark_NAME`` (registered first: its dataclasses need it)."""
    key = f"benchmark_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[key] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[key]


def lookups(features: int, rows: int, dim: int, batch: int, batches: int) -> tuple[dict[str, Callable[[int], None]], dict[str, int]]:
    """Name -> ``step(i)`` (a forward of prepared batch ``i % batches``), and each contender's table bytes."""
    names = [f"f{i}" for i in range(features)]
    gen = torch.Generator().manual_seed(0)
    kjts = [KeyedJaggedTensor(keys=names, values=v, lengths=torch.ones_like(v))
            for v in (torch.randint(0, rows, (features * batch,), generator=gen) for _ in range(batches))]  # fmt: skip
    fp32 = PerFeatureTables(Schema([FeatureSpec(n, embedding_dim=dim) for n in names], label=None), dict.fromkeys(names, rows))
    fp32.eval()
    layouts = {"fp32": fp32, **{f"{'fp' if bits == 16 else 'int'}{bits}": quantize(fp32, bits) for bits in BITS}}

    def step(layout: Any) -> Callable[[int], None]:
        def run(i: int) -> None:
            with torch.no_grad():
                layout(kjts[i % batches])

        return run

    sizes = {name: layout.memory_bytes() for name, layout in layouts.items()}
    sizes["fp32"] = features * rows * dim * 4  # weights only: what a served fp32 model holds
    return {name: step(layout) for name, layout in layouts.items()}, sizes


def speed(args: argparse.Namespace) -> dict[str, Any]:
    """Forward lookups per CPU second and bytes of every contender, and the ratios against fp32."""
    steps, sizes = lookups(args.features, args.table_rows, args.dim, args.batch, args.batches)
    times = _script("tables").measure(steps, args.reps, args.warmup)
    cpu = {name: statistics.median(t["cpu"]) for name, t in times.items()}
    per_step = args.features * args.batch
    return {
        "config": {k: getattr(args, k) for k in ("features", "table_rows", "dim", "batch", "reps", "warmup", "batches")},
        "contenders": {
            name: {
                "cpu_median_ms": round(1e3 * cpu[name], 3),
                "wall_median_ms": round(1e3 * statistics.median(times[name]["wall"]), 3),
                "lookups_per_s": round(per_step / cpu[name]),
                "speed_vs_fp32": round(cpu["fp32"] / cpu[name], 3),
                "bytes": sizes[name],
                "bytes_vs_fp32": round(sizes[name] / sizes["fp32"], 4),
            }
            for name in steps
        },
    }


def quality(args: argparse.Namespace) -> dict[str, Any]:
    """Per model: the fp32 artifact's test metrics and, per bits, the quantized artifact's and the change."""
    bench = _script("quality")
    settings = bench.Settings(rows=args.rows, epochs=1, batch_size=args.batch_size)
    splits = bench.prepare_data(args.data_dir, settings.rows, settings.seed)
    out: dict[str, Any] = {"rows": args.rows, "models": {}}
    for model in args.models:
        trained = bench.run(f"quantization_{model}", settings, splits, args.work_dir, bench.MODELS[model])
        artifact = args.work_dir / f"quantization_{model}" / "model"
        fp32 = evaluate(artifact, splits["test"], batch_size=args.batch_size)
        entry: dict[str, Any] = {"fp32": {"test": fp32, "table_bytes": trained["table_memory_bytes"]}}
        for bits in BITS:
            report = quantize_model(artifact, args.work_dir / f"quantization_{model}" / f"model-{bits}bit", bits)
            test = evaluate(report.output, splits["test"], batch_size=args.batch_size)
            entry[str(bits)] = {
                "test": test, "table_bytes": report.bytes_after,
                "auc_change": round(test["auc"] - fp32["auc"], 5), "logloss_change": round(test["logloss"] - fp32["logloss"], 5),
            }  # fmt: skip
        out["models"][model] = entry
    out["targets"] = {
        f"int{bits} loses at most {bound} test AUC": {
            "met": all(-m[str(bits)]["auc_change"] <= bound for m in out["models"].values()),
            **{model: m[str(bits)]["auc_change"] for model, m in out["models"].items()},
        }
        for bits, bound in AUC_LOSS_TARGETS.items()
    }
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Lookups per CPU second and bytes against fp32 (left); test AUC change per model and bits (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    contenders = result["speed"]["contenders"]
    names = list(contenders)
    bars = left.bar(names, [contenders[n]["lookups_per_s"] / 1e6 for n in names], color="#4c72b0")
    left.bar_label(bars, labels=[f"{contenders[n]['lookups_per_s'] / 1e6:.1f}M\n{contenders[n]['bytes_vs_fp32']:.3f}x bytes" for n in names], fontsize=8)
    left.set_ylabel("million lookups per CPU second (forward)")
    c = result["speed"]["config"]
    left.set_title(f"{c['features']} features x {c['table_rows']:,} rows x dim {c['dim']}, batch {c['batch']}, 1 thread")
    models = result["quality"]["models"]
    width = 0.8 / max(len(models), 1)
    for i, (model, entry) in enumerate(models.items()):
        changes = [entry[str(b)]["auc_change"] for b in BITS]
        right.bar([j + i * width for j in range(len(BITS))], changes, width, label=model)
    right.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(BITS))], [f"{b} bits" for b in BITS])
    for bits, bound in AUC_LOSS_TARGETS.items():
        right.hlines(-bound, BITS.index(bits) - 0.4, BITS.index(bits) + 0.8, colors="black", linestyles="--")
    right.axhline(0, color="grey", linewidth=0.8)
    right.set_ylabel("test AUC change vs fp32 (dashed: targets)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=26)
    parser.add_argument("--table-rows", type=int, default=100_000, help="rows per table of the speed part")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4096, help="speed part: lookups per feature per step")
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4, help="distinct prepared batches, cycled")
    parser.add_argument("--rows", type=int, default=1_000_000, help="quality part: synthetic CTR rows")
    parser.add_argument("--batch-size", type=int, default=2048, help="quality part: training and evaluation batch")
    parser.add_argument("--models", nargs="+", default=["mlp", "din"], help="quality part: models of benchmarks/quality.py")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/quantization"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "quantization.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.features, args.table_rows, args.batch, args.reps, args.warmup, args.rows, args.batch_size = 4, 1000, 256, 3, 1, 3000, 256
    unknown = sorted(set(args.models) - set(_script("quality").MODELS))
    if unknown:
        parser.error(f"--models {unknown}: not models of benchmarks/quality.py {sorted(_script('quality').MODELS)}")
    torch.set_num_threads(1)
    load_before, start = os.getloadavg()[0], time.perf_counter()
    result: dict[str, Any] = {"speed": speed(args), "quality": quality(args)}
    result["environment"] = {
        **versions(), "python": sys.version.split()[0], "machine": platform.machine(), "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(), "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "invocation_wall_s": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    _script("quality").write_json(result, args.out)
    plot(result, args.out.with_suffix(".png"))
    speeds = result["speed"]["contenders"]
    print("| table | M lookups/CPU-s | vs fp32 | bytes | vs fp32 |\n|---|---|---|---|---|")
    for name, s in speeds.items():
        print(f"| {name} | {s['lookups_per_s'] / 1e6:.2f} | {s['speed_vs_fp32']:.2f}x | {s['bytes']:,} | {s['bytes_vs_fp32']:.3f} |")
    print("\n| model | fp32 test AUC | " + " | ".join(f"{b} bits" for b in BITS) + " |\n|---|---|" + "---|" * len(BITS))
    for model, entry in result["quality"]["models"].items():
        print(f"| {model} | {entry['fp32']['test']['auc']:.4f} | " + " | ".join(f"{entry[str(b)]['auc_change']:+.5f}" for b in BITS) + " |")
    met = sum(t["met"] for t in result["quality"]["targets"].values())
    int8 = speeds["int8"]
    print(f"quantization: int8 {int8['speed_vs_fp32']:.2f}x the fp32 lookups at {int8['bytes_vs_fp32']:.3f}x the bytes; "
          f"AUC targets met {met}/{len(result['quality']['targets'])}; wrote {args.out} and {args.out.with_suffix('.png')}")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
