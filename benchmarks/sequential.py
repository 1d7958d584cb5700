"""SASRec and BERT4Rec on real data (Amazon Beauty and Toys, one user per line) against ICLRec's
published numbers, with time-to-quality curves and memory over training.

Protocol (ICLRec's, so published numbers compare): leave-one-out by position, full ranking over
all items with the user's history excluded, HR@k and NDCG@k for k = 5, 10, 20, max length 50,
hidden 64; the model is selected on validation NDCG@10 only (evaluated every ``--eval-every``
steps), test is computed once, for the selected model. Each (data, model) run is one
``recsys-embed train`` subprocess with one torch thread and a wall-clock budget of
``--minutes`` (training and validation; data loading and the final test are outside it);
``--parallel`` runs go side by side, one per core. Popularity is reported on the same split.

The runs read ``../shared/data/sequential/{Beauty,Toys_and_Games}.txt`` (``--data-dir``); a
missing file is skipped with a message. Writes ``benchmarks/results/sequential.json`` and
``.png`` (validation NDCG@10 and resident memory against wall-clock seconds).

    python benchmarks/sequential.py [--data Beauty,Toys_and_Games] [--models sasrec,bert4rec]
        [--minutes 30] [--eval-every 200] [--parallel 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from recsys_embed.artifacts import versions

RESULTS = Path(__file__).resolve().parent / "results"
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sequential"
# ICLRec (Chen et al., WWW 2022), its repository's README, trained models on exactly these files
ANCHORS = {
    "Beauty": {"hr@5": 0.0500, "ndcg@5": 0.0326, "hr@10": 0.0744, "ndcg@10": 0.0403, "hr@20": 0.1058, "ndcg@20": 0.0483},
    "Toys_and_Games": {"hr@5": 0.0598, "ndcg@5": 0.0404, "hr@10": 0.0834, "ndcg@10": 0.0480, "hr@20": 0.1138, "ndcg@20": 0.0557},
}
MODELS = {
    "sasrec": {"name": "sasrec", "max_len": 50, "dim": 64, "num_layers": 2, "num_heads": 1, "dropout": 0.5},
    "bert4rec": {"name": "bert4rec", "max_len": 50, "dim": 64, "num_layers": 2, "num_heads": 2, "dropout": 0.1, "mask_prob": 0.2,
                 "last_item_prob": 0.2},
}


def run_one(data: Path, model: str, args: argparse.Namespace, work: Path) -> dict:
    """Train ``model`` on ``data`` in a ``recsys-embed train`` subprocess; its metrics."""
    run_dir = work / f"{data.stem}_{model}"
    config = {
        "task": "sequential",
        "data": {"events": str(data), "format": "user_lines"},
        "model": MODELS[model],
        "trainer": {"batch_size": args.batch_size, "epochs": 100_000, "eval_every": args.eval_every, "patience": args.patience,
                    "max_seconds": 60 * args.minutes, "lr": args.lr, "ks": [5, 10, 20], "checkpoints": False,
                    "progress": False, "seed": args.seed},
        "run_dir": str(run_dir),
    }  # fmt: skip
    path = work / f"{data.stem}_{model}.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "recsys_embed.jobs.cli", "--threads", str(args.threads), "train", "--config", str(path)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{data.stem} {model}: exit {done.returncode}: {done.stderr[-2000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    curve = [{k: round(e[k], 5) for k in ("steps", "seconds", "ndcg@10", "hr@10", "rss_mb")} for e in metrics["evaluations"]]
    rss = [e["rss_mb"] for e in metrics["evaluations"]]
    print(f"{data.stem} {model}: {done.stdout.strip().splitlines()[-1]}", flush=True)
    return {
        "test": {k: round(v, 5) for k, v in metrics["test"].items() if not k.startswith("mrr")},
        "popularity_test": {k: round(v, 5) for k, v in metrics["popularity"]["test"].items() if not k.startswith("mrr")},
        "valid_best": {k: round(metrics["best"][k], 5) for k in ("ndcg@10", "hr@10", "steps", "seconds", "epoch")},
        "train_seconds": round(metrics["train_seconds"], 1), "job_seconds": round(wall, 1), "steps": metrics["steps"],
        "rows_per_second": round(metrics["samples_per_second"], 1), "peak_rss_mb": round(metrics["peak_rss_mb"]),
        "rss_mb": {"first_evaluation": round(rss[0]), "last_evaluation": round(rss[-1]), "max_evaluation": round(max(rss))},
        "data": metrics["data"], "curve": curve, "summary": done.stdout.strip().splitlines()[-1],
    }  # fmt: skip


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(result["runs"])
    fig, axes = plt.subplots(2, len(datasets), figsize=(6 * len(datasets), 7), squeeze=False)
    for column, data in enumerate(datasets):
        top, bottom = axes[0][column], axes[1][column]
        for model, run in result["runs"][data].items():
            seconds = [p["seconds"] for p in run["curve"]]
            top.plot(seconds, [p["ndcg@10"] for p in run["curve"]], marker=".", label=f"{model} (test {run['test']['ndcg@10']:.4f})")
            bottom.plot(seconds, [p["rss_mb"] for p in run["curve"]], marker=".", label=model)
        if data in ANCHORS:
            top.axhline(ANCHORS[data]["ndcg@10"], color="gray", linestyle="--", label=f"ICLRec test {ANCHORS[data]['ndcg@10']}")
        top.set(title=f"{data}: validation NDCG@10", xlabel="wall-clock seconds (1 thread)", ylabel="NDCG@10")
        bottom.set(title=f"{data}: resident memory", xlabel="wall-clock seconds", ylabel="MiB", ylim=(0, None))
        top.legend(fontsize=8)
        bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".tmp.png"), dpi=110)
    plt.close(fig)
    path.with_suffix(".tmp.png").rename(path.with_suffix(".png"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="Beauty,Toys_and_Games", help="file stems under --data-dir, comma separated")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--models", default="sasrec,bert4rec")
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget of each run (training + validation)")
    parser.add_argument("--eval-every", type=int, default=200, help="steps between validations")
    parser.add_argument("--patience", type=int, default=10, help="validations without improvement before stopping")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    parser.add_argument("--parallel", type=int, default=2, help="runs side by side")
    parser.add_argument("--out", type=Path, default=RESULTS / "sequential.json")
    args = parser.parse_args(argv)
    jobs = []
    for stem in args.data.split(","):
        path = args.data_dir / f"{stem}.txt"
        if not path.is_file():
            print(f"skipping {stem}: {path} not found (the shared sequential data; see --data-dir)", flush=True)
            continue
        jobs += [(path, model) for model in args.models.split(",")]
    if not jobs:
        raise SystemExit(f"no data to run on under {args.data_dir}")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.parallel) as pool:
        futures = {(path.stem, model): pool.submit(run_one, path, model, args, Path(tmp)) for path, model in jobs}
        runs: dict[str, dict] = {}
        for (stem, model), future in futures.items():
            runs.setdefault(stem, {})[model] = future.result()
    best = {stem: max(models.values(), key=lambda r: r["valid_best"]["ndcg@10"]) for stem, models in runs.items()}
    result = {
        "protocol": "ICLRec's: leave-one-out by position; full ranking over all items, history excluded; "
        "model selected on validation NDCG@10, test once",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "models": {m: MODELS[m] for m in args.models.split(",")},
        "anchors_iclrec": {stem: ANCHORS[stem] for stem in runs if stem in ANCHORS},
        "runs": runs,
        "targets": {
            stem: {
                "model_selected_on_validation": next(m for m, r in runs[stem].items() if r is best[stem]),
                "ndcg@10_met": best[stem]["test"]["ndcg@10"] >= ANCHORS[stem]["ndcg@10"],
                "hr@10_met": best[stem]["test"]["hr@10"] >= ANCHORS[stem]["hr@10"],
                "within_minutes": best[stem]["train_seconds"] <= 60 * 30,
            }
            for stem in runs if stem in ANCHORS
        },
        "environment": {
            **versions(), "python": sys.version.split()[0], "machine": platform.machine(), "cpus": os.cpu_count(),
            "threads_per_run": args.threads, "runs_side_by_side": args.parallel,
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.rename(args.out)
    plot(result, args.out)
    for stem, target in result["targets"].items():
        run = best[stem]
        print(f"{stem}: {target['model_selected_on_validation']} test NDCG@10 {run['test']['ndcg@10']:.4f} "
              f"(ICLRec {ANCHORS[stem]['ndcg@10']}) HR@10 {run['test']['hr@10']:.4f} (ICLRec {ANCHORS[stem]['hr@10']}) "
              f"in {run['train_seconds']:.0f} s, peak RSS {run['peak_rss_mb']} MiB")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
