"""CTR models side by side: logistic regression, FM, DeepFM, DCN-v2, MLP, AutoInt+ and DIN, each
over several seeds, test AUC and logloss (mean ± std) and training time.

Data: the synthetic CTR data (``--rows``, split by time 80/10/10, as ``benchmarks/quality.py``
makes it), or a file a user points at, ``--data PATH --schema criteo|avazu|libfm``, read by the
library's reader of that format (``read_criteo``, ``read_avazu``, ``read_libfm``) with its named
schema (``criteo``, ``avazu``: raw or pre-encoded, ``libfm``: the fields the reader found),
split at random 80/10/10 (seed 0) into ``--data-dir``. DIN runs only where the schema has
behaviour histories (sequence features): the synthetic data, not Criteo, Avazu or libFM.

Every run goes through ``jobs.train``: per-feature tables with fused rowwise Adagrad, Adam for the
dense parameters, up to ``--epochs`` epochs with early stopping on the validation split
(``--metric``, ``--logloss-guard``, ``--patience``; the best validation evaluation is kept), then
one evaluation on the test split; the test split is never used to choose. The same
hyper-parameters for every model (``Settings``; those of ``benchmarks/quality.py``) except the
tables' learning rate: each model runs with every ``--table-lr`` and keeps the one whose seeds'
mean best validation ``--metric`` is best (FM, whose embeddings are also its only interaction
weights, overfits within an epoch at the 0.4 that suits the deep models).

**Selection rules** are compared on each run's validation curve (one evaluation per epoch),
replayed under each rule with the same patience (:func:`selection_rules`): validation AUC, the
default; AUC with a logloss guard (an AUC gain counts only at a logloss within 1% of the lowest
so far); validation logloss. The report gives, per rule, the mean validation AUC and logloss of
the evaluation it keeps, over all runs: validation only, so the default rule of the library is
chosen without the test split.

**Logistic regression** is the MLP with no hidden layer over embeddings of dim 4 (the smallest
the fused kernel takes): its logit is ``b + sum_f <w_f, e_f(id)> + <v, dense>``, and since each
id's embedding is free, ``<w_f, e_f(id)>`` is one free weight per id: logistic regression on the
one-hot ids (reparametrized) plus the numeric features (sequences contribute the mean of their
items' weights). Not FM's first-order term alone, whose read-out shares FM's 16-dim embeddings.

Seeds vary the model (weight draws, data order), not the data. Per seed the models run in a
rotated order (load on a shared machine hits all alike); torch uses ``--threads`` (1) threads.
Targets of issue 15 (stated for the synthetic data, computed for any data) on mean test AUC:
DCN-v2 or DeepFM at or above AutoInt+; every deep model above logistic regression and FM.
The JSON is written after every run; ``--resume`` takes the runs of an ``--out`` JSON made with
the same settings and data. Writes ``benchmarks/results/ctr_models.json`` and ``.png``.

    python benchmarks/ctr_models.py [--rows 1000000] [--seeds 3] [--epochs 5] [--models fm deepfm ...]
    python benchmarks/ctr_models.py --data train.txt --schema criteo
    python benchmarks/ctr_models.py --rows 3000 --seeds 1 --epochs 1 --out /tmp/ctr.json   # tiny, for the tests
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from recsys_embed.artifacts import versions
from recsys_embed.errors import ConfigError
from recsys_embed.features import Schema
from recsys_embed.jobs.config import BatchingConfig, DataConfig, RunConfig
from recsys_embed.jobs.ctr import train
from recsys_embed.jobs.trainer import TrainerConfig, improves
from recsys_embed.pipelines import split_dataset
from recsys_embed.pipelines.named import named_schema
from recsys_embed.pipelines.readers import read_avazu, read_criteo, read_libfm
from recsys_embed.pipelines.readers.libfm import VALUE_SUFFIX
from recsys_embed.pipelines.synthetic.ctr import oracle_auc
from recsys_embed.tables import TableOptimizer

HERE = Path(__file__).resolve().parent
READERS = {"criteo": read_criteo, "avazu": read_avazu, "libfm": read_libfm}
BASELINES = ("logistic_regression", "fm")
DEEP = ("deepfm", "dcn_v2", "mlp", "autoint_plus", "din")
EMBEDDING_DIMS = {"logistic_regression": 4}  # the others: Settings.embedding_dim


def _quality() -> Any:
    """benchmarks/quality.py: its data preparation, JSON writer and model specs are shared."""
    if "benchmark_quality" not in sys.modules:
        spec = importlib.util.spec_from_file_location("benchmark_quality", HERE / "quality.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[spec.name] = module  # type: ignore[union-attr]  (its dataclasses look it up)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules["benchmark_quality"]


quality = _quality()
MODELS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"name": "mlp", "hidden": []},
    "fm": {"name": "fm"},
    "deepfm": {"name": "deepfm"},
    "dcn_v2": {"name": "dcn_v2"},
    "mlp": quality.MODELS["mlp"],
    "autoint_plus": quality.MODELS["autoint_plus"],
    "din": quality.MODELS["din"],
    # plain AutoInt (no DNN), with the paper's learned residual projection and with the identity
    # residual it had before: run when named in --models
    "autoint": quality.MODELS["autoint"],
    "autoint_identity": {**quality.MODELS["autoint"], "residual": "identity"},
}
ISSUE_MODELS = [m for m in MODELS if not m.startswith("autoint") or m == "autoint_plus"]  # issue 15's seven: the default --models


@dataclass
class Settings:
    """What every run shares (recorded in the JSON)."""

    rows: int = 1_000_000  # synthetic data only
    seeds: int = 3
    epochs: int = 5
    patience: int = 1
    metric: str = "auc"
    logloss_guard: float | None = None
    batch_size: int = 2048
    lr: float = 3e-3
    table_lrs: list[float] = dataclasses.field(default_factory=lambda: [0.05, 0.4])
    embedding_dim: int = 16


@dataclass
class Data:
    """The splits, the schema name and options (``named_schema``), and a label for reports."""

    splits: dict[str, str]
    schema: dict[str, Any]
    label: str
    synthetic: bool

    def schema_for(self, model: str, settings: Settings) -> Schema:
        return named_schema({**self.schema, "embedding_dim": EMBEDDING_DIMS.get(model, settings.embedding_dim)})


def user_data(path: Path, schema: str, data_dir: Path) -> Data:
    """``path`` read by the reader of ``schema``, split at random 80/10/10 into ``data_dir`` once."""
    frame = READERS[schema](path)
    columns = [c for c in frame.collect_schema().names() if c != "label"]
    options: dict[str, Any] = {"name": schema}
    if schema == "libfm":
        options["fields"] = [c for c in columns if not c.endswith(VALUE_SUFFIX)]
    if schema == "avazu" and "hour_of_day" not in columns:  # pre-encoded: label, feat_1, ...
        options["columns"] = columns
    root = data_dir / f"{schema}-{path.name}"
    names = ("train", "valid", "test")
    if not all((root / "splits" / n).exists() for n in names):
        split_dataset(frame, root / "splits", by="random", fractions=(0.8, 0.1, 0.1), seed=0)
    return Data({n: str(root / "splits" / n) for n in names}, options, f"{path.name} ({schema}, random 80/10/10)", False)


def run(model: str, table_lr: float, seed: int, settings: Settings, data: Data, work_dir: Path) -> dict[str, Any]:
    """Train ``model`` with ``seed`` and tables' ``table_lr``, keep the best validation evaluation, score the test split."""
    config = RunConfig(
        data=DataConfig(**data.splits),
        model=dict(MODELS[model]),
        table_optimizer=TableOptimizer("rowwise_adagrad", lr=table_lr),
        trainer=TrainerConfig(
            epochs=settings.epochs, patience=settings.patience, metric=settings.metric, logloss_guard=settings.logloss_guard,
            lr=settings.lr, seed=seed, progress=False, checkpoints=False,
        ),  # fmt: skip
        batching=BatchingConfig(batch_size=settings.batch_size, shuffle=True),
        run_dir=str(work_dir / f"{model}-table_lr{table_lr}-seed{seed}"),
    )
    wall = time.perf_counter()
    report = train(config, schema=data.schema_for(model, settings), overwrite=True)
    wall = time.perf_counter() - wall
    metrics = json.loads((Path(config.run_dir) / "metrics.json").read_text())
    curve = [{k: e[k] for k in ("epoch", "auc", "logloss")} for e in metrics["evaluations"]]
    return {
        "model": model, "table_lr": table_lr, "seed": seed, "test": report.test, "valid_best": report.valid,
        "valid_peaks": report.peaks, "valid_curve": curve, "epochs_run": len(curve), "steps": report.steps,
        "train_s": round(metrics["train_seconds"], 2), "wall_s": round(wall, 2),
    }  # fmt: skip


def mean_std(values: list[float]) -> dict[str, float]:
    """``{"mean": ..., "std": ...}`` (sample std; 0 for one value).

    >>> mean_std([0.7, 0.8])
    {'mean': 0.75, 'std': 0.0707}
    """
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 4), "std": round(std, 4)}


def chosen_table_lr(runs: list[dict[str, Any]], metric: str) -> tuple[float, dict[float, float]]:
    """The tables' learning rate whose runs' mean best validation ``metric`` is best, and that mean per rate.

    >>> chosen_table_lr([{"table_lr": 0.4, "valid_best": {"auc": 0.70}}, {"table_lr": 0.05, "valid_best": {"auc": 0.72}}], "auc")
    (0.05, {0.4: 0.7, 0.05: 0.72})
    """
    means = {lr: round(statistics.fmean(r["valid_best"][metric] for r in runs if r["table_lr"] == lr), 4)
             for lr in dict.fromkeys(r["table_lr"] for r in runs)}  # fmt: skip
    pick = min if metric == "logloss" else max
    return pick(means, key=means.__getitem__), means


def summarize(runs: list[dict[str, Any]], metric: str) -> dict[str, dict[str, Any]]:
    """Per model, in :data:`MODELS` order, at its chosen tables' learning rate (:func:`chosen_table_lr`):
    test AUC, test logloss and training seconds over its seeds."""
    summary = {}
    for model in MODELS:
        every = [r for r in runs if r["model"] == model]
        if every:
            table_lr, by_lr = chosen_table_lr(every, metric)
            mine = [r for r in every if r["table_lr"] == table_lr]
            summary[model] = {
                "table_lr": table_lr,
                f"valid_{metric}_by_table_lr": {str(lr): v for lr, v in by_lr.items()},
                "seeds": len(mine),
                "test_auc": mean_std([r["test"]["auc"] for r in mine]),
                "test_logloss": mean_std([r["test"]["logloss"] for r in mine]),
                "train_s": mean_std([r["train_s"] for r in mine]),
            }
    return summary


RULES = {"auc": ("auc", None), "auc, logloss guard 0.01": ("auc", 0.01), "logloss": ("logloss", None)}


def replay(curve: list[dict[str, float]], metric: str, logloss_guard: float | None, patience: int, epochs: int) -> dict[str, Any] | None:
    """The evaluation of ``curve`` that the Trainer keeps under ``metric`` / ``logloss_guard`` /
    ``patience`` (:func:`~recsys_embed.jobs.trainer.improves`); None when the curve ends (the
    run stopped under its own rule) before this rule would have stopped.

    >>> curve = [{"epoch": 1, "auc": 0.70, "logloss": 0.45}, {"epoch": 2, "auc": 0.72, "logloss": 0.60}, {"epoch": 3, "auc": 0.71, "logloss": 0.70}]
    >>> [replay(curve, m, g, 1, 5)["epoch"] for m, g in RULES.values()]
    [2, 1, 1]
    """
    kept, best, stale = None, None, 0
    for i, record in enumerate(curve):
        if improves(record, curve[:i], best, metric, logloss_guard):
            kept, best, stale = record, record[metric], 0
        else:
            stale += 1
        if stale >= patience:
            return kept
    return kept if len(curve) >= epochs else None


def selection_rules(runs: list[dict[str, Any]], settings: Settings) -> dict[str, dict[str, Any]]:
    """Per rule of :data:`RULES`: the mean validation AUC and logloss of the evaluation it keeps,
    over the runs whose curve decides it (``undecided``: the others), and how many of them keep
    another epoch than the AUC rule."""
    def kept(run: dict[str, Any], rule: str) -> dict[str, Any] | None:
        return replay(run["valid_curve"], *RULES[rule], settings.patience, settings.epochs)

    out = {}
    for rule in RULES:
        pairs = [(kept(r, rule), kept(r, "auc")) for r in runs]
        decided = [(k, a) for k, a in pairs if k is not None]
        out[rule] = {
            "runs": len(decided),
            "undecided": len(runs) - len(decided),
            "valid_auc": round(statistics.fmean(k["auc"] for k, _ in decided), 4) if decided else None,
            "valid_logloss": round(statistics.fmean(k["logloss"] for k, _ in decided), 4) if decided else None,
            "other_epoch_than_auc": sum(a is None or k["epoch"] != a["epoch"] for k, a in decided),
        }
    return out


def targets(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Issue 15's targets on mean test AUC, each ``{"met": bool, ...}``; a target whose models did not all run is left out.

    >>> s = {m: {"test_auc": {"mean": a}} for m, a in [("logistic_regression", 0.70), ("fm", 0.72), ("deepfm", 0.75),
    ...      ("dcn_v2", 0.74), ("mlp", 0.71), ("autoint_plus", 0.745)]}
    >>> {name: t["met"] for name, t in targets(s).items()}
    {'dcn_v2 or deepfm >= autoint_plus': True, 'every deep model > logistic_regression and fm': False}
    """
    auc = {model: s["test_auc"]["mean"] for model, s in summary.items()}
    out: dict[str, dict[str, Any]] = {}
    if {"dcn_v2", "deepfm", "autoint_plus"} <= set(auc):
        differences = {f"{m} - autoint_plus": round(auc[m] - auc["autoint_plus"], 4) for m in ("dcn_v2", "deepfm")}
        out["dcn_v2 or deepfm >= autoint_plus"] = {"met": max(differences.values()) >= 0, **differences}
    deep = [m for m in DEEP if m in auc]
    if deep and set(BASELINES) <= set(auc):
        pairs = {f"{d} - {b}": round(auc[d] - auc[b], 4) for d in deep for b in BASELINES}
        out["every deep model > logistic_regression and fm"] = {"met": min(pairs.values()) > 0, **pairs}
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Test AUC, test logloss and training seconds per model: mean bars, std whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    names = list(summary)
    oracle = result["data"].get("oracle_test_auc")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, key, label in zip(axes, ("test_auc", "test_logloss", "train_s"), ("test AUC", "test logloss", "training seconds")):
        means = [summary[n][key]["mean"] for n in names]
        bars = ax.bar(names, means, yerr=[summary[n][key]["std"] for n in names], capsize=3, color="#4c72b0")
        ax.bar_label(bars, fmt="%.4f" if key != "train_s" else "%.1f", fontsize=7)
        ax.set_ylabel(label)
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    aucs = [summary[n]["test_auc"]["mean"] for n in names] + ([oracle] if oracle else [])
    axes[0].set_ylim(min(aucs) - 0.02, max(aucs) + 0.02)
    if oracle:
        axes[0].axhline(oracle, color="black", linestyle="--", label=f"oracle {oracle:.4f}")
        axes[0].legend(loc="best")
    s = result["settings"]
    fig.suptitle(f"{result['data']['label']}: {s['seeds']} seed(s), up to {s['epochs']} epoch(s), selection on validation {s['metric']}"
                 + (f" (logloss guard {s['logloss_guard']})" if s["logloss_guard"] else ""))  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Settings()
    parser.add_argument("--rows", type=int, default=defaults.rows, help="synthetic rows (without --data)")
    parser.add_argument("--data", type=Path, help="a Criteo, Avazu or libFM file instead of the synthetic data")
    parser.add_argument("--schema", choices=sorted(READERS), help="the format of --data")
    parser.add_argument("--seeds", type=int, default=defaults.seeds, help="seeds 0 .. N-1 per model")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--metric", choices=("auc", "logloss"), default=defaults.metric, help="validation metric that selects")
    parser.add_argument("--logloss-guard", type=float, default=defaults.logloss_guard, help="trainer.logloss_guard (with --metric auc)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="Adam lr of the dense parameters")
    parser.add_argument("--table-lr", type=float, nargs="+", default=defaults.table_lrs,
                        help="rowwise Adagrad lrs of the tables: each model keeps the best on validation")  # fmt: skip
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=ISSUE_MODELS)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/ctr_models"), help="run folders of the trainings")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ctr_models.json")
    parser.add_argument("--resume", action="store_true", help="keep the runs of --out made with the same settings and data")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    if (args.data is None) != (args.schema is None):
        parser.error("--data and --schema go together")
    settings = Settings(
        rows=args.rows, seeds=args.seeds, epochs=args.epochs, patience=args.patience, metric=args.metric,
        logloss_guard=args.logloss_guard, batch_size=args.batch_size, lr=args.lr, table_lrs=args.table_lr,
    )  # fmt: skip
    try:
        TrainerConfig(epochs=settings.epochs, patience=settings.patience, metric=settings.metric, logloss_guard=settings.logloss_guard)
    except ConfigError as err:  # before any data is written
        parser.error(str(err))
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.data is None:
        splits = quality.prepare_data(args.data_dir, settings.rows, 0)
        data = Data(splits, {"name": "synthetic_ctr"}, f"synthetic CTR, {settings.rows:,} rows, time 80/10/10", True)
    else:
        data = user_data(args.data, args.schema, args.data_dir)
    has_history = any(f.is_sequence for f in data.schema_for("din", settings).features)
    models = [m for m in args.models if m != "din" or has_history]
    result: dict[str, Any] = {
        "settings": dataclasses.asdict(settings),
        "data": {"label": data.label, "schema": data.schema, **data.splits},
        "models": {m: MODELS[m] for m in models},
        "skipped": {"din": "no behaviour histories (sequence features) in the schema"} if len(models) < len(args.models) else {},
        "environment": {**versions(), "python": sys.version.split()[0], "machine": platform.machine(), "cpus": os.cpu_count(),
                        "torch_threads": torch.get_num_threads()},  # fmt: skip
        "runs": [],
    }
    if data.synthetic:
        result["data"]["oracle_test_auc"] = round(oracle_auc(data.splits["test"]), 4)
    if args.resume and args.out.exists():
        earlier = json.loads(args.out.read_text())
        if (earlier["settings"], earlier["data"]) == (result["settings"], result["data"]):
            result["runs"] = earlier["runs"]
    done = {(r["model"], r["table_lr"], r["seed"]) for r in result["runs"]}
    rotated = [(seed, m) for seed in range(settings.seeds) for m in models[seed % len(models):] + models[: seed % len(models)]]
    plan = [(m, lr, seed) for seed, m in rotated for lr in settings.table_lrs if (m, lr, seed) not in done]
    with tqdm(plan, desc="ctr_models", unit="run", dynamic_ncols=True) as bar:
        for model, table_lr, seed in bar:
            bar.set_postfix(model=model, table_lr=table_lr, seed=seed)
            result["runs"].append(run(model, table_lr, seed, settings, data, args.work_dir))
            result["summary"] = summarize(result["runs"], settings.metric)
            quality.write_json(result, args.out)
    result["summary"] = summarize(result["runs"], settings.metric)
    result["selection_rules"] = selection_rules(result["runs"], settings)
    result["targets"] = targets(result["summary"])
    result["environment"]["invocation_wall_s"] = round(time.perf_counter() - start, 1)
    quality.write_json(result, args.out)
    plot(result, args.out.with_suffix(".png"))
    best = max(result["summary"], key=lambda m: result["summary"][m]["test_auc"]["mean"])
    auc = result["summary"][best]["test_auc"]
    met = sum(t["met"] for t in result["targets"].values())
    print(f"ctr_models: {data.label}: best test AUC {best} {auc['mean']:.4f} ± {auc['std']:.4f}; "
          f"targets met {met}/{len(result['targets'])}; wrote {args.out} and {args.out.with_suffix('.png')}")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
