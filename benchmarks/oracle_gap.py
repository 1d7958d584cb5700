"""Where DIN's gap to the oracle AUC comes from, on the synthetic CTR data (``benchmarks/quality.py``'s
data and settings).

Three diagnostics, each a DIN trained through ``jobs.train`` (``quality.run``):

1. **More epochs**: up to ``--epochs`` epochs with early stopping on validation AUC; the
   validation AUC of every epoch is recorded (does a second pass help, or overfit?).
2. **More capacity**: the same DIN with embedding dim ``--wide-dim`` instead of 16.
3. **Gap by id frequency**: the test rows bucketed by how often their user (and, separately,
   their item) occurs in the training split; in each bucket the model's AUC next to the oracle
   AUC (``p_true``) of the same rows. A gap that stays wide for well-observed users and items is
   not explained by rare ids alone.

Writes ``benchmarks/results/oracle_gap.json`` and ``.png``.

    python benchmarks/oracle_gap.py [--rows 1000000] [--epochs 3] [--wide-dim 32]
    python benchmarks/oracle_gap.py --smoke --out /tmp/gap.json    # tiny, for the tests
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recsys_embed.metrics import auc
from recsys_embed.model_io import load_model
from recsys_embed.trainer import Trainer, TrainerConfig

HERE = Path(__file__).resolve().parent
BUCKETS = ((0, 1), (1, 5), (5, 20), (20, 100), (100, None))  # training occurrences, [lo, hi)


def _quality_module() -> Any:
    """benchmarks/quality.py (data preparation, settings and the training run are shared)."""
    spec = importlib.util.spec_from_file_location("benchmark_quality", HERE / "quality.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def training_counts(train: str, column: str, values: np.ndarray) -> np.ndarray:
    """How often each of ``values`` occurs in ``column`` of the training split."""
    counts = pl.scan_parquet(f"{train}/*.parquet").group_by(column).len().collect()
    lookup = pl.DataFrame({column: values}).join(counts, on=column, how="left")
    return lookup["len"].fill_null(0).to_numpy()


def gap_by_frequency(
    run_dir: Path, splits: dict[str, str], batch_size: int, min_rows: int = 200
) -> dict[str, list[dict[str, Any]]]:
    """Model and oracle AUC of the test rows, bucketed by training occurrences of user and item
    (buckets of fewer than ``min_rows`` rows, or of one class only, are left out)."""
    loaded = load_model(run_dir / "model")
    trainer = Trainer(loaded.model, TrainerConfig(progress=False))
    scores, labels, _ = trainer.predict(loaded.pipeline.batches(splits["test"], batch_size=batch_size))
    test = pl.read_parquet(f"{splits['test']}/*.parquet", columns=["user_id", "item_id", "label", "p_true"])
    if not np.array_equal(test["label"].to_numpy(), labels):
        raise RuntimeError(f"{splits['test']}: the batch stream is not in file order; cannot align rows")
    p_true = test["p_true"].to_numpy()
    out: dict[str, list[dict[str, Any]]] = {}
    for column in ("user_id", "item_id"):
        counts = training_counts(splits["train"], column, test[column].to_numpy())
        rows = []
        for lo, hi in BUCKETS:
            mask = (counts >= lo) & (counts < (hi if hi is not None else np.inf))
            y = labels[mask]
            if mask.sum() < min_rows or y.min() == y.max():
                continue
            model_auc, oracle = auc(scores[mask], y), auc(p_true[mask], y)
            rows.append({"train_occurrences": [lo, hi], "rows": int(mask.sum()), "model_auc": round(model_auc, 4),
                         "oracle_auc": round(oracle, 4), "gap": round(oracle - model_auc, 4)})  # fmt: skip
        out[column] = rows
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Model vs oracle AUC per frequency bucket, for users and items."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (column, rows) in zip(axes, result["gap_by_frequency"].items()):
        labels = [f"{lo}-{hi - 1}" if hi else f">={lo}" for lo, hi in (r["train_occurrences"] for r in rows)]
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["model_auc"] for r in rows], 0.4, label="DIN")
        ax.bar(x + 0.2, [r["oracle_auc"] for r in rows], 0.4, label="oracle (p_true)")
        ax.set_xticks(x, labels)
        ax.set_xlabel(f"occurrences of the row's {column} in the training split")
        ax.set_ylabel("test AUC")
        lows = [r["model_auc"] for r in rows] or [0.5]
        ax.set_ylim(min(lows) - 0.05, 1.0)
        ax.legend(loc="upper left")
    fig.suptitle(f"DIN vs oracle by id frequency, synthetic CTR {result['settings']['rows']:,} rows")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    quality = _quality_module()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=quality.Settings.rows)
    parser.add_argument("--epochs", type=int, default=3, help="most epochs of the longer run (early stopping)")
    parser.add_argument("--wide-dim", type=int, default=32, help="embedding dim of the wider run")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/oracle_gap"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "oracle_gap.json")
    parser.add_argument("--min-bucket-rows", type=int, default=200, help="smallest frequency bucket reported")
    parser.add_argument("--smoke", action="store_true", help="tiny data, to check the script runs")
    args = parser.parse_args(argv)
    settings = quality.Settings(rows=args.rows, epochs=args.epochs)
    if args.smoke:
        settings = quality.Settings(rows=3000, epochs=2, batch_size=256)
        args.wide_dim, args.min_bucket_rows = 8, 20
    torch.set_num_threads(1)
    load_before, start = os.getloadavg()[0], time.perf_counter()
    splits = quality.prepare_data(args.data_dir, settings.rows, settings.seed)
    longer = quality.run("din_epochs", settings, splits, args.work_dir, {"name": "din"})
    wide_settings = dataclasses.replace(settings, epochs=1, embedding_dim=args.wide_dim)
    wide = quality.run(f"din_dim{args.wide_dim}", wide_settings, splits, args.work_dir, {"name": "din"})
    result = {
        "settings": dataclasses.asdict(settings),
        "wide_dim": args.wide_dim,
        "din_epochs": {"valid_by_epoch": longer["valid_by_epoch"], "test_of_best_epoch": longer["test"]},
        "din_wide": {"test": wide["test"]},
        "gap_by_frequency": gap_by_frequency(
            args.work_dir / "din_epochs", splits, settings.batch_size, args.min_bucket_rows
        ),
        "environment": {"load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                        "wall_s": round(time.perf_counter() - start, 1)},  # fmt: skip
    }
    quality.write_json(result, args.out)
    plot(result, args.out.with_suffix(".png"))
    for column, rows in result["gap_by_frequency"].items():
        for r in rows:
            print(f"{column:<8} {str(r['train_occurrences']):<12} rows {r['rows']:>7,}  DIN {r['model_auc']:.4f}  "
                  f"oracle {r['oracle_auc']:.4f}  gap {r['gap']:.4f}")  # fmt: skip
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    main()
