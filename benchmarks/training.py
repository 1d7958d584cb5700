"""Training throughput and test AUC: our DIN and AutoInt against DeepCTR-Torch and torch-rechub.

One run, side by side, on the same synthetic CTR data (``write_ctr``, split by time 80/10/10;
trained on train, scored on test), the same embedding dim, MLP and attention sizes, batch size,
epochs, seed and ``torch.set_num_threads``:

* ``ours``: ``Pipeline`` -> ``PerFeatureTables`` (fbgemm TBE, fused rowwise Adagrad) ->
  ``DIN`` / ``AutoInt`` -> ``Trainer.fit`` (Adam for the dense part), streaming shuffled
  batches from the Parquet split: our usual path;
* ``deepctr``: DeepCTR-Torch's ``DIN`` / ``AutoInt`` and ``model.fit`` (Adam);
* ``rechub``: torch-rechub's ``DIN`` / ``AutoInt``, ``DataGenerator`` and ``CTRTrainer`` (Adam).

The peers get the rows label-encoded with OUR fitted vocabularies (so every id is identical),
exported to Parquet, which they load through their own usual input path (pandas -> dict of
numpy arrays, histories padded to ``max_len``) inside their own venv ``benchmarks/.venv-peers``
(created here when missing; a stamp file records what it holds). See
``benchmarks/peers/run_peer.py`` for the differences their APIs force.

Every contender trains in a fresh process. The training loop alone is timed (wall clock and
process CPU time): setup (fitting, exporting, loading into memory, building loaders) is not,
but each framework's own batch production inside its loop is. One more pass over the same
training loader alone gives the data path's share. The contenders run interleaved, in a
rotated order each repetition (so load on the shared machine hits all alike); per contender
the best repetition's throughput is kept, and the AUC (computed here, one function for all, from
each one's test predictions) is averaged. Writes ``benchmarks/results/training.json`` and ``.png``.

    python benchmarks/training.py [--rows 200000] [--reps 2] [--frameworks ours,deepctr,rechub] [--models din,autoint]
    python benchmarks/training.py --smoke --results /tmp/out     # tiny, ours only (what CI runs)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow.parquet as pq
import torch

from recsys_embed import metrics
from recsys_embed.artifacts import versions
from recsys_embed.jobs.builders import SEQUENCE_MEAN_MODELS, build_model
from recsys_embed.pipelines import Pipeline, split_dataset
from recsys_embed.pipelines.synthetic.ctr import ctr_schema, oracle_auc, write_ctr
from recsys_embed.jobs.ranking_model import RankingModel
from recsys_embed.tables.base import TableOptimizer
from recsys_embed.tables.per_feature import PerFeatureTables
from recsys_embed.jobs.trainer import Trainer, TrainerConfig, seed_everything

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PEERS_VENV = HERE / ".venv-peers"
PEER_SCRIPT = HERE / "peers" / "run_peer.py"
FRAMEWORKS = ("ours", "deepctr", "rechub")
MODELS = ("din", "autoint")
# installed in this order into PEERS_VENV (torch first: this machine serves its CPU wheel locally)
PEER_REQUIREMENTS = (
    ("torch==2.13.0",),
    ("deepctr-torch==0.3.0", "torch-rechub==0.9.0", "pandas==3.1.1", "scikit-learn==1.9.1", "pyarrow==26.0.1"),
)
TARGET_SPEEDUP = 2.0
AUC_TOLERANCE = 0.001  # "equal AUC": within this of the faster peer


@dataclass
class BenchConfig:
    """Everything both sides share; written to the run config every worker reads."""

    rows: int = 200_000
    seed: int = 0
    batch_size: int = 2048
    epochs: int = 1
    embedding_dim: int = 16
    threads: int = 2
    lr: float = 1e-3  # Adam, dense parameters (and the peers' embeddings)
    table_lr: float = 0.05  # our fused rowwise Adagrad on the tables
    din: dict[str, Any] = field(default_factory=lambda: {"attention_hidden": [80, 40], "hidden": [200, 80]})
    autoint: dict[str, Any] = field(default_factory=lambda: {"num_layers": 3, "num_heads": 2, "dnn": [200, 80]})


def ensure_peers_venv(venv: Path = PEERS_VENV) -> Path:
    """The peers' venv python, creating the venv and installing :data:`PEER_REQUIREMENTS` when
    its stamp file is missing or records other requirements (so a rerun installs nothing)."""
    python, stamp = venv / "bin" / "python", venv / ".installed"
    wanted = json.dumps(PEER_REQUIREMENTS)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for group in PEER_REQUIREMENTS:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *group], check=True)
    stamp.write_text(wanted)
    return python


def prepare_data(work: Path, rows: int, seed: int) -> dict[str, Path]:
    """Synthetic CTR rows split by time into train/valid/test (reused when already there)."""
    data = work / f"synthetic-ctr-{rows}-seed{seed}"
    splits = {name: data / "splits" / name for name in ("train", "valid", "test")}
    if not splits["test"].exists():
        write_ctr(data / "raw", rows=rows, seed=seed, overwrite=True, progress=False)
        split_dataset(data / "raw", data / "splits", by="time", fractions=(0.8, 0.1, 0.1), seed=seed)
    return splits


def export_encoded(pipe: Pipeline, source: Path, path: Path) -> Path:
    """Write ``source`` encoded by ``pipe`` (ids of our vocabularies, transformed dense values,
    histories truncated to ``max_len``) as one Parquet file, via a temp name."""
    tmp = path.with_name(f".{path.name}.tmp")
    writer = None
    for batch in pipe.transform(source):
        writer = writer or pq.ParquetWriter(tmp, batch.schema)
        writer.write_batch(batch)
    if writer is None:
        raise ValueError(f"{source}: no rows to export")
    writer.close()
    tmp.rename(path)
    return path


def run_config(cfg: BenchConfig, pipe: Pipeline, splits: dict[str, Path], work: Path) -> dict[str, Any]:
    """The JSON every worker (ours and the peers') reads: features, table rows, data, hyper-parameters."""
    schema = pipe.schema
    owners = {f.table: f.name for f in schema.sparse_features if not f.is_sequence}
    sequences = {
        f.name: {"max_len": f.max_len, "candidate": owners[f.table]} for f in schema.sparse_features if f.is_sequence
    }
    features = {
        "categorical": [f.name for f in schema.sparse_features if not f.is_sequence],
        "sequences": sequences,
        "dense": [f.name for f in schema.dense_features],
        "tables": {f.name: f.table for f in schema.sparse_features},
    }
    peer_data = {name: export_encoded(pipe, splits[name], work / f"peers-{name}.parquet") for name in ("train", "test")}
    return {
        **asdict(cfg),
        "features": features,
        "table_rows": dict(pipe.num_embeddings),
        "label": schema.label,
        "pipeline": str(pipe.save(work / "pipeline")),
        "splits": {name: str(path) for name, path in splits.items()},
        "data": {name: str(path) for name, path in peer_data.items()},
    }


def model_spec(model: str, config: dict[str, Any]) -> dict[str, Any]:
    """Our ``build_model`` spec with the shared sizes (AutoInt: head dim = embedding dim / heads, as the peers fix it)."""
    if model == "din":
        din = config["din"]
        return {"name": "din", "attention_hidden": din["attention_hidden"], "attention_activation": "dice",
                "hidden": din["hidden"], "activation": "dice"}  # fmt: skip
    autoint, dim = config["autoint"], config["embedding_dim"]
    return {"name": "autoint", "field_dim": dim, "num_layers": autoint["num_layers"], "num_heads": autoint["num_heads"],
            "head_dim": dim // autoint["num_heads"], "dnn": autoint["dnn"], "dnn_activation": "relu"}  # fmt: skip


def timed(run: Callable[[], T]) -> tuple[T, dict[str, float]]:
    """``run()``'s result and its seconds: wall clock and process CPU time (all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = run()
    return out, {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def train_ours(model: str, config: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """Train our model as a user would (the worker side of ``main``); returns the report and test predictions."""
    torch.set_num_threads(config["threads"])
    seed_everything(config["seed"])  # before the tables and the model draw their initial weights
    pipe = Pipeline.load(config["pipeline"])
    schema = pipe.schema
    # AutoInt reads only each history's mean: the kernel pools it (what jobs.train does for it)
    tables = PerFeatureTables(
        schema, pipe.num_embeddings, TableOptimizer(lr=config["table_lr"]), pool_sequences=model in SEQUENCE_MEAN_MODELS
    )
    net = RankingModel(tables, build_model(model_spec(model, config), tables.shapes(len(schema.dense_features)), schema))
    trainer = Trainer(net, TrainerConfig(epochs=config["epochs"], lr=config["lr"], seed=config["seed"], progress=False))
    train = pipe.batches(config["splits"]["train"], batch_size=config["batch_size"], shuffle=True, seed=config["seed"])
    result, loop = timed(lambda: trainer.fit(train))
    train.set_epoch(0)
    _, data = timed(lambda: sum(1 for _ in train))
    preds, _, _ = net.predict(pipe.batches(config["splits"]["test"], batch_size=config["batch_size"]))
    dense = sum(p.numel() for p in net.model.parameters())
    report = {
        "samples": result.samples,
        "steps": result.steps,
        "loop_seconds": loop,
        "data_pass_seconds": data,
        "dense_parameters": dense,
        "embedding_parameters": tables.num_parameters(),
        "versions": {**versions(), "python": platform.python_version()},
        "threads": torch.get_num_threads(),
    }
    return report, preds.astype(np.float64)


def worker_command(framework: str, model: str, config_path: Path, out: Path, preds: Path, peers_python: Path | None) -> list[str]:
    if framework == "ours":
        return [sys.executable, str(Path(__file__).resolve()), "worker", "--model", model, "--config", str(config_path),
                "--out", str(out), "--preds", str(preds)]  # fmt: skip
    if peers_python is None:
        raise ValueError(f"framework {framework!r} needs the peers' venv; it was not set up")
    return [str(peers_python), str(PEER_SCRIPT), "--framework", framework, "--model", model, "--config", str(config_path),
            "--out", str(out), "--preds", str(preds)]  # fmt: skip


def run_contenders(
    contenders: list[tuple[str, str]], reps: int, config_path: Path, work: Path, labels: np.ndarray, peers_python: Path | None
) -> list[dict[str, Any]]:
    """Each (framework, model) ``reps`` times in a fresh process, interleaved in a rotated order."""
    runs = []
    for rep in range(reps):
        shift = rep % len(contenders)
        for framework, model in contenders[shift:] + contenders[:shift]:
            out, preds = work / f"{framework}-{model}-{rep}.json", work / f"{framework}-{model}-{rep}.npy"
            command = worker_command(framework, model, config_path, out, preds, peers_python)
            print(f"rep {rep + 1}/{reps}: {framework} {model} ...", flush=True)
            load = os.getloadavg()[0]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{framework} {model} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
            report = json.loads(out.read_text())
            scores = np.load(preds)
            if scores.shape != labels.shape:
                raise ValueError(f"{framework} {model}: {scores.shape[0]} test predictions for {labels.shape[0]} test rows")
            loop, data = report["loop_seconds"], report["data_pass_seconds"]
            report.update(
                framework=framework, model=model, rep=rep, load_average_at_start=round(load, 2),
                samples_per_s=report["samples"] / loop["wall"],
                samples_per_cpu_s=report["samples"] / loop["cpu"],
                data_share=data["wall"] / loop["wall"],
                auc=metrics.auc(scores, labels), logloss=metrics.logloss(scores, labels),
            )  # fmt: skip
            print(f"    {report['samples_per_s']:,.0f} samples/s, AUC {report['auc']:.4f}", flush=True)
            runs.append(report)
    return runs


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per contender: the best repetition's throughput, the mean AUC / logloss over repetitions."""
    summary: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys((r["framework"], r["model"]) for r in runs):
        mine = [r for r in runs if (r["framework"], r["model"]) == key]
        best = max(mine, key=lambda r: r["samples_per_s"])
        summary[f"{key[0]} {key[1]}"] = {
            "framework": key[0],
            "model": key[1],
            "samples_per_s": best["samples_per_s"],
            "samples_per_cpu_s": max(r["samples_per_cpu_s"] for r in mine),
            "data_share": best["data_share"],
            "auc": float(np.mean([r["auc"] for r in mine])),
            "auc_runs": [r["auc"] for r in mine],
            "logloss": float(np.mean([r["logloss"] for r in mine])),
            "dense_parameters": best["dense_parameters"],
            "embedding_parameters": best["embedding_parameters"],
        }
    return summary


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model: ours / the faster peer (by samples/s), and the AUC difference."""
    out = {}
    for model in MODELS:
        ours = summary.get(f"ours {model}")
        peers = [s for s in summary.values() if s["model"] == model and s["framework"] != "ours"]
        if ours is None or not peers:
            continue
        fastest = max(peers, key=lambda s: s["samples_per_s"])
        speedup = ours["samples_per_s"] / fastest["samples_per_s"]
        auc_delta = ours["auc"] - fastest["auc"]
        out[model] = {
            "faster_peer": fastest["framework"],
            "speedup": speedup,
            "cpu_speedup": ours["samples_per_cpu_s"] / fastest["samples_per_cpu_s"],
            "auc_delta": auc_delta,
            "target": f"speedup >= {TARGET_SPEEDUP} at AUC >= the faster peer's - {AUC_TOLERANCE}",
            "met": speedup >= TARGET_SPEEDUP and auc_delta >= -AUC_TOLERANCE,
        }
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Two panels: training samples/s and test AUC, bars grouped by model, one colour per framework."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    frameworks = [f for f in FRAMEWORKS if any(s["framework"] == f for s in summary.values())]
    models = [m for m in MODELS if any(s["model"] == m for s in summary.values())]
    colours = {"ours": "#4c72b0", "deepctr": "#dd8452", "rechub": "#55a868"}
    width = 0.8 / len(frameworks)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, framework in enumerate(frameworks):
        xs = [m + (i - (len(frameworks) - 1) / 2) * width for m in range(len(models))]
        rows = [summary.get(f"{framework} {model}") for model in models]
        rate = [r["samples_per_s"] if r else 0.0 for r in rows]
        auc = [r["auc"] if r else 0.0 for r in rows]
        left.bar_label(left.bar(xs, rate, width, label=framework, color=colours[framework]), fmt="%.0f", fontsize=8)
        right.bar_label(right.bar(xs, auc, width, label=framework, color=colours[framework]), fmt="%.4f", fontsize=8)
    aucs = [s["auc"] for s in summary.values()]
    right.axhline(result["data"]["oracle_test_auc"], color="black", linestyle="--", linewidth=1, label="oracle")
    right.set_ylim(min(aucs) - 0.02, max(result["data"]["oracle_test_auc"], *aucs) + 0.01)
    c = result["config"]
    titles = ((left, "samples/s", "training samples/s (wall clock, best rep)"), (right, "AUC", "test AUC (mean of reps)"))
    for ax, label, title in titles:
        ax.set_xticks(range(len(models)), [m.upper() if m == "din" else "AutoInt" for m in models])
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(f"{result['data']['train_rows']:,} training rows, batch {c['batch_size']}, dim {c['embedding_dim']}, "
                 f"{c['epochs']} epoch, {c['threads']} threads")  # fmt: skip
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.rename(path)


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{'contender':<16} {'samples/s':>10} {'samples/cpu-s':>14} {'data share':>11} {'test AUC':>9} {'logloss':>8}")
    for name, s in result["summary"].items():
        print(f"{name:<16} {s['samples_per_s']:>10,.0f} {s['samples_per_cpu_s']:>14,.0f} {s['data_share']:>11.0%} "
              f"{s['auc']:>9.4f} {s['logloss']:>8.4f}")  # fmt: skip
    print(f"oracle test AUC {result['data']['oracle_test_auc']:.4f}")
    for model, r in result["ratios"].items():
        verdict = "met" if r["met"] else "NOT met"
        print(f"{model}: ours / {r['faster_peer']} = {r['speedup']:.2f}x samples/s ({r['cpu_speedup']:.2f}x per CPU second), "
              f"AUC {r['auc_delta']:+.4f}; target {r['target']}: {verdict}")  # fmt: skip


def write_json(result: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.rename(path)


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    cfg = BenchConfig(rows=args.rows, seed=args.seed, batch_size=args.batch_size, epochs=args.epochs, threads=args.threads)
    frameworks = [f for f in args.frameworks.split(",") if f]
    unknown = sorted(set(frameworks) - set(FRAMEWORKS))
    if unknown:
        raise ValueError(f"--frameworks: unknown {unknown}; expected some of {FRAMEWORKS}")
    models = [m for m in MODELS if m in args.models.split(",")]
    if set(args.models.split(",")) - set(MODELS) or not models:
        raise ValueError(f"--models: expected some of {MODELS}, got {args.models!r}")
    peers_python = ensure_peers_venv() if set(frameworks) - {"ours"} else None
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    splits = prepare_data(work, cfg.rows, cfg.seed)
    pipe = Pipeline(ctr_schema(cfg.embedding_dim)).fit(splits["train"])
    config = run_config(cfg, pipe, splits, work)
    config_path = work / "config.json"
    write_json(config, config_path)
    labels = pq.read_table(config["data"]["test"], columns=[config["label"]])[config["label"]].to_numpy().astype(np.float64)
    load_before = os.getloadavg()
    contenders = [(f, m) for m in models for f in frameworks]
    runs = run_contenders(contenders, args.reps, config_path, work, labels, peers_python)
    summary = summarize(runs)
    result = {
        "config": {**asdict(cfg), "reps": args.reps, "frameworks": frameworks, "our_models": {m: model_spec(m, config) for m in models},
                   "table_optimizer": asdict(TableOptimizer(lr=cfg.table_lr))},  # fmt: skip
        "method": "training loop only (each framework's own batch production inside it), fresh process per run, "
        "contenders interleaved in a rotated order per rep; samples/s of the best rep, AUC/logloss averaged over reps, "
        "computed here from each run's test predictions; data_share = one extra pass over the training loader alone / loop",
        "data": {
            "rows": cfg.rows,
            "train_rows": pq.ParquetFile(config["data"]["train"]).metadata.num_rows,
            "test_rows": int(labels.size),
            "oracle_test_auc": oracle_auc(splits["test"]),
            "split": "by time 0.8/0.1/0.1 (valid unused)",
        },
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "versions": {r["framework"]: r["versions"] for r in runs},
        },
        "summary": summary,
        "ratios": ratios(summary),
        "runs": runs,
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    write_json(result, results / "training.json")
    plot(result, results / "training.png")
    print_table(result)
    print(f"wrote {results / 'training.json'} and training.png")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("worker", help="(internal) train one of our models from a run config")
    worker.add_argument("--model", choices=MODELS, required=True)
    worker.add_argument("--config", required=True)
    worker.add_argument("--out", required=True)
    worker.add_argument("--preds", required=True)
    parser.add_argument("--rows", type=int, default=BenchConfig.rows, help="synthetic rows before the 80/10/10 split")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=BenchConfig.seed)
    parser.add_argument("--batch-size", type=int, default=BenchConfig.batch_size)
    parser.add_argument("--epochs", type=int, default=BenchConfig.epochs)
    parser.add_argument("--threads", type=int, default=BenchConfig.threads)
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help=f"comma-separated, of {FRAMEWORKS}")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {MODELS}")
    parser.add_argument("--work-dir", default=str(HERE.parent / "data" / "bench-training"), help="data and run files")
    parser.add_argument("--results", default=str(RESULTS), help="folder for training.json and training.png")
    parser.add_argument("--smoke", action="store_true", help="tiny data, one rep, one thread, ours only (no peers' venv needed)")
    args = parser.parse_args(argv)
    if args.command == "worker":
        config = json.loads(Path(args.config).read_text())
        report, preds = train_ours(args.model, config)
        np.save(f"{args.preds}.tmp.npy", preds)
        os.replace(f"{args.preds}.tmp.npy", args.preds)
        write_json(report, Path(args.out))
        return
    if args.smoke:
        args.rows, args.reps, args.frameworks, args.batch_size, args.threads = 4_000, 1, "ours", 512, 1
    benchmark(args)


if __name__ == "__main__":
    main()
