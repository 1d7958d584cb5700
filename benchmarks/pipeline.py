"""Feature pipeline throughput on a Criteo-shaped dataset, side by side with the pandas +
scikit-learn preprocessing of DeepCTR-Torch's Criteo example.

The data: ``--rows`` rows (default 1M) in Parquet (row groups of 131,072 rows), a 0/1
label, 13 numeric columns (Zipf counts, 10% null) and 26 string categoricals of 8 hex chars,
Zipf-distributed (a = 1.2) over the Criteo Kaggle cardinalities, 5% null.

Contenders, all reading the same Parquet file from disk:

* ``ours_hash``: ``Pipeline`` with 26 hashed categoricals (2^20 buckets) and 13
  ``log1p_standardize`` numerics; ``ours_vocab``: the same with fitted vocabularies
  (min_count 1, like LabelEncoder). Phases: ``fit``; ``transform`` (all encoded Arrow
  batches; building the lookup tables is not in it); ``fit_transform`` (a fresh pipeline:
  fit, lookup tables, transform); ``batches`` (one epoch of shuffled ``Batch`` es of 4096
  read from disk, ``num_workers`` 0 and 2).
* ``pandas_sklearn`` (run in ``benchmarks/.venv-peers``: ``pip install pandas scikit-learn
  pyarrow``; created on first run): ``pd.read_parquet``, ``fillna``, one ``LabelEncoder`` per
  categorical and a ``MinMaxScaler``, as DeepCTR-Torch's ``run_classification_criteo.py``.
  ``fit`` = read + fillna + fit, ``transform`` = read + fillna + transform (scoring new
  data), ``fit_transform`` = the example end to end. ``batches``: DeepCTR then concatenates
  the encoded columns into one float matrix and trains from ``DataLoader(TensorDataset(x, y),
  batch_size=4096, shuffle=True)``; the peers process saves that matrix and the loader runs
  here (torch is not in the peers venv).

The iterator against training: the median step time at batch 4096 of MLP and AutoInt on
per-feature tables of the fitted vocabularies (one torch thread), and the batches/s of our
single-process iterator (``batches_w0``) over the fastest model's steps/s (target: 5).

Every phase runs ``--repeats`` times, contenders interleaved, and is timed by wall clock
and by process CPU time (all threads of the measuring process; ``batches_w2`` worker
processes are not in it). The machine is shared: rates use the best wall time of the
repeats and the CPU time of that repeat; the load average is recorded. Writes
``benchmarks/results/pipeline.json`` and ``pipeline.png`` and prints a table.

``--fit-rss ROWS`` instead measures the peak RSS of fitting ROWS rows (``/usr/bin/time -v``
around a fresh process; vocabulary and hashing schemas) and adds it to the JSON.

    .venv/bin/python benchmarks/pipeline.py [--rows 1000000] [--repeats 3]
    .venv/bin/python benchmarks/pipeline.py --fit-rss 5000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PEERS = HERE / ".venv-peers"
# Criteo Kaggle (45M rows) distinct values of C1..C26
CARDINALITIES = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27,
                 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]  # fmt: skip
DENSE = [f"I{i}" for i in range(1, 14)]
SPARSE = [f"C{i}" for i in range(1, 27)]
BATCH = 4096
ROW_GROUP = 131_072


# ---------------------------------------------------------------- data (numpy + pyarrow only)
def _hex8(values: np.ndarray) -> pa.Array:
    shifts = np.arange(28, -4, -4, dtype=np.uint32)
    nibbles = (values.astype(np.uint32)[:, None] >> shifts[None, :]) & 0xF
    chars = np.frombuffer(b"0123456789abcdef", np.uint8)[nibbles].reshape(-1)
    offsets = np.arange(0, 8 * len(values) + 1, 8, dtype=np.int32)
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def _chunk(rng: np.random.Generator, n: int) -> pa.Table:
    columns: dict[str, pa.Array] = {"label": pa.array((rng.random(n) < 0.25).astype(np.int64))}
    for name in DENSE:
        counts = rng.zipf(1.5, n).astype(np.float64) - 1
        columns[name] = pa.array(counts, mask=rng.random(n) < 0.1)
    for i, (name, card) in enumerate(zip(SPARSE, CARDINALITIES)):
        ranks = (rng.zipf(1.2, n) - 1) % card
        mixed = (ranks.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(i)) >> np.uint64(32)
        columns[name] = pc.if_else(pa.array(rng.random(n) < 0.05), pa.scalar(None, pa.string()), _hex8(mixed))
    return pa.table(columns)


def make_criteo(path: Path, rows: int, seed: int = 0) -> Path:
    """Write the Criteo-shaped Parquet file chunk by chunk (bounded memory)."""
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, ROW_GROUP):
        table = _chunk(rng, min(ROW_GROUP, rows - start))
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP)
    assert writer is not None
    writer.close()
    return path


# ---------------------------------------------------------------- timing
def timed(fn: Callable[[], Any]) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    return min(runs, key=lambda r: r["wall_s"])


# ---------------------------------------------------------------- ours
def schemas() -> dict[str, Any]:
    from recsys_embed.features import FeatureSpec, Schema

    dense = [FeatureSpec(n, kind="numeric", transform="log1p_standardize") for n in DENSE]
    return {
        "ours_hash": Schema(dense + [FeatureSpec(n, ids="hashing", hash_buckets=1 << 20) for n in SPARSE], label="label"),
        "ours_vocab": Schema(dense + [FeatureSpec(n, min_count=1) for n in SPARSE], label="label"),
    }


def ours_round(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """One repeat of every phase of both our contenders."""
    from recsys_embed.pipelines import Pipeline

    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, schema in schemas().items():
        fresh = Pipeline(schema)
        phases = {"fit_transform": timed(lambda: sum(b.num_rows for b in fresh.fit(path).transform(path)))}
        pipe = Pipeline(schema)
        phases["fit"] = timed(lambda: pipe.fit(path))
        pipe.encoder()  # building the lookup tables belongs to loading, not to transforming
        phases["transform"] = timed(lambda: sum(b.num_rows for b in pipe.transform(path)))
        for workers in (0, 2):
            stream = pipe.batches(path, batch_size=BATCH, shuffle=True, num_workers=workers)
            phases[f"batches_w{workers}"] = timed(lambda: sum(1 for _ in stream))
        out[name] = phases
    return out


def training_steps(path: Path) -> dict[str, dict[str, float]]:
    """Seconds per training step (forward, backward, fused table update, Adam) at batch
    ``BATCH`` of the models we ship that take Criteo-shaped rows: MLP (20 steps) and AutoInt
    (3 steps: it is an order of magnitude slower), on the per-feature tables of the fitted
    vocabularies (dim 16, rowwise Adagrad), one torch thread (the CLI's default); median
    after one warm-up step. DIN needs behaviour histories, which these rows do not have."""
    import torch

    from recsys_embed.models import MLP, AutoInt, AutoIntConfig, MLPConfig
    from recsys_embed.pipelines import Pipeline
    from recsys_embed.jobs.ranking_model import RankingModel
    from recsys_embed.tables import PerFeatureTables, TableOptimizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    schema = schemas()["ours_vocab"]
    pipe = Pipeline(schema).fit(path)
    stream = iter(pipe.batches(path, batch_size=BATCH, shuffle=True, drop_last=True))
    batches = [next(stream) for _ in range(4)]
    models = {"mlp": (lambda shapes: MLP(shapes, MLPConfig()), 20), "autoint": (lambda shapes: AutoInt(shapes, AutoIntConfig()), 3)}
    out = {}
    for name, (make, steps) in models.items():
        torch.manual_seed(0)
        tables = PerFeatureTables(schema, pipe.num_embeddings, TableOptimizer("rowwise_adagrad", lr=0.05))
        model = RankingModel(tables, make(tables.shapes(len(schema.dense_features))))
        optimizer = torch.optim.Adam(model.dense_param_groups(1e-3, 0.0))
        times = []
        for step in range(steps + 1):
            batch = batches[step % len(batches)]
            start = time.perf_counter()
            loss, _ = model.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        step_s = float(np.median(times[1:]))
        out[name] = {"step_s": round(step_s, 4), "steps_per_s": round(1 / step_s, 2)}
    torch.set_num_threads(threads)
    return out


# ---------------------------------------------------------------- pandas + scikit-learn (peers venv)
def baseline_round(path: Path) -> dict[str, dict[str, float]]:
    """DeepCTR-Torch's Criteo preprocessing; runs inside the peers venv."""
    import pandas as pd
    from sklearn.preprocessing import LabelEncoder, MinMaxScaler

    def load() -> Any:
        data = pd.read_parquet(path)
        data[SPARSE] = data[SPARSE].fillna("-1")
        data[DENSE] = data[DENSE].fillna(0)
        return data

    encoders: dict[str, LabelEncoder] = {}
    scaler = MinMaxScaler(feature_range=(0, 1))

    def fit() -> None:
        data = load()
        for feat in SPARSE:
            encoders[feat] = LabelEncoder().fit(data[feat])
        scaler.fit(data[DENSE])

    def transform() -> Any:
        data = load()
        for feat in SPARSE:
            data[feat] = encoders[feat].transform(data[feat])
        data[DENSE] = scaler.transform(data[DENSE])
        return data

    def fit_transform() -> Any:
        data = load()
        for feat in SPARSE:
            data[feat] = LabelEncoder().fit_transform(data[feat])
        data[DENSE] = MinMaxScaler(feature_range=(0, 1)).fit_transform(data[DENSE])
        return data

    phases = {"fit": timed(fit), "transform": timed(transform), "fit_transform": timed(fit_transform)}
    encoded = fit_transform()
    x = np.concatenate([encoded[f].to_numpy()[:, None] for f in SPARSE + DENSE], axis=-1).astype(np.float32)
    np.save(path.with_suffix(".x.npy"), x)
    np.save(path.with_suffix(".y.npy"), encoded["label"].to_numpy().astype(np.float32))
    return phases


def deepctr_batches(path: Path) -> dict[str, float]:
    """One epoch of DeepCTR-Torch's loader over the matrix the peers process saved."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = torch.from_numpy(np.load(path.with_suffix(".x.npy"))), torch.from_numpy(np.load(path.with_suffix(".y.npy")))
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    return timed(lambda: sum(1 for _ in loader))


def ensure_peers() -> Path:
    python = PEERS / "bin" / "python"
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", str(PEERS)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "pandas", "scikit-learn", "pyarrow"], check=True)
    return python


def run_baseline(python: Path, path: Path) -> dict[str, dict[str, float]]:
    done = subprocess.run([str(python), __file__, "--baseline-round", str(path)], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def peer_versions(python: Path) -> dict[str, str]:
    code = ("import json, pandas, sklearn, pyarrow; print(json.dumps({'pandas': pandas.__version__, "
            "'scikit-learn': sklearn.__version__, 'pyarrow': pyarrow.__version__}))")
    return json.loads(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout)


# ---------------------------------------------------------------- peak RSS of fit
FIT_CODE = """
import sys
sys.path.insert(0, {here!r})
from pipeline import schemas
from recsys_embed.pipelines import Pipeline
pipe = Pipeline(schemas()[{name!r}]).fit({path!r})
print(sum(pipe.num_embeddings.values()))
"""


def peak_rss_mb(code: str) -> tuple[float, float, str]:
    """Peak RSS (MiB) and CPU seconds (user + system) of a fresh interpreter running ``code``, and its stdout."""
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", code], check=True, capture_output=True, text=True)
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))  # type: ignore[union-attr]
    times = [re.search(rf"{kind} time \(seconds\): ([\d.]+)", done.stderr) for kind in ("User", "System")]
    cpu = sum(float(t.group(1)) for t in times)  # type: ignore[union-attr]
    return round(kib / 1024, 1), round(cpu, 1), done.stdout


def fit_rss(rows: int, folder: Path) -> dict[str, Any]:
    """Peak RSS of fresh processes fitting ``rows`` rows (the data file is kept in ``folder``)."""
    path = folder / f"criteo-{rows}.parquet"
    if not path.exists():
        make_criteo(path, rows)
    out: dict[str, Any] = {"rows": rows, "file_mb": round(path.stat().st_size / 2**20, 1)}
    out["import_only_peak_rss_mb"], _, _ = peak_rss_mb("import recsys_embed.pipelines")
    for name in ("ours_vocab", "ours_hash"):
        start = time.perf_counter()
        rss, cpu, stdout = peak_rss_mb(FIT_CODE.format(here=str(HERE), name=name, path=str(path)))
        out[name] = {"peak_rss_mb": rss, "wall_s": round(time.perf_counter() - start, 1), "cpu_s": cpu,
                     "table_rows": int(stdout.split()[-1])}  # fmt: skip
    return out


# ---------------------------------------------------------------- report
def summarize(rows: int, ours: list[dict], base: list[dict]) -> dict[str, Any]:
    def rates(runs: list[dict[str, dict[str, float]]], phase: str) -> dict[str, float]:
        b = best([r[phase] for r in runs])
        per_row = BATCH if phase.startswith("batches") else 1
        return {"wall_s": round(b["wall_s"], 3), "cpu_s": round(b["cpu_s"], 3), "rows_per_s": round(rows / b["wall_s"]),
                "rows_per_cpu_s": round(rows / b["cpu_s"]), "batches_per_s": round(rows / per_row / b["wall_s"], 1)}  # fmt: skip

    table: dict[str, dict[str, dict[str, float]]] = {}
    for name in ("ours_hash", "ours_vocab"):
        table[name] = {phase: rates([r[name] for r in ours], phase) for phase in ours[0][name]}
    table["pandas_sklearn"] = {phase: rates(base, phase) for phase in base[0]}
    ratios = {}
    for name in ("ours_hash", "ours_vocab"):
        for phase in ("fit", "transform", "fit_transform", "batches_w0"):
            ours_rate, base_rate = table[name][phase], table["pandas_sklearn"][phase]
            ratios[f"{name}.{phase}"] = {"wall": round(ours_rate["rows_per_s"] / base_rate["rows_per_s"], 1),
                                         "cpu": round(ours_rate["rows_per_cpu_s"] / base_rate["rows_per_cpu_s"], 1)}  # fmt: skip
    return {"results": table, "ratios_vs_pandas_sklearn": ratios}


def batches_vs_steps(summary: dict[str, Any], steps: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Batches/s of each contender's single-process iterator over the steps/s of the fastest
    training step (target: 5)."""
    fastest = max(steps, key=lambda m: steps[m]["steps_per_s"])
    rate = steps[fastest]["steps_per_s"]
    ratios = {name: round(summary["results"][name]["batches_w0"]["batches_per_s"] / rate, 1) for name in ("ours_hash", "ours_vocab")}
    return {"steps": steps, "fastest": fastest, "batches_per_step": ratios, "target": 5}


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = ["fit", "transform", "fit_transform", "batches_w0", "batches_w2"]
    contenders = ["ours_hash", "ours_vocab", "pandas_sklearn"]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    width = 0.27
    for i, name in enumerate(contenders):
        values = [summary["results"][name].get(p, {}).get("rows_per_s", 0) for p in phases]
        bars = ax.bar(np.arange(len(phases)) + (i - 1) * width, values, width, label=name)
        ax.bar_label(bars, labels=[f"{v / 1e3:.0f}k" if v else "" for v in values], fontsize=7)
    ax.set_xticks(np.arange(len(phases)), ["fit", "transform", "fit + transform", "epoch of batches\n(B=4096)", "batches,\n2 workers"])
    ax.set_yscale("log")
    ax.set_ylabel("rows / s (best wall time)")
    machine = summary["machine"]
    ax.set_title(f"Criteo-shaped {summary['rows']:,} rows, {machine['cpus']} CPUs (shared, load {machine['load_before'][0]:.1f})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def print_table(summary: dict[str, Any]) -> None:
    print(f"{'contender':<16} {'phase':<14} {'wall s':>8} {'cpu s':>8} {'rows/s':>12} {'rows/cpu-s':>12} {'batches/s':>10}")
    for name, phases in summary["results"].items():
        for phase, r in phases.items():
            per_s = r["batches_per_s"] if phase.startswith("batches") else "-"
            print(f"{name:<16} {phase:<14} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} {r['rows_per_s']:>12,} "
                  f"{r['rows_per_cpu_s']:>12,} {per_s:>10}")
    for key, ratio in summary["ratios_vs_pandas_sklearn"].items():
        print(f"ratio {key:<24} wall {ratio['wall']:>6}x   cpu {ratio['cpu']:>6}x")
    steps = summary["training_step"]
    for model, r in steps["steps"].items():
        print(f"training step {model:<8} {r['step_s']:.3f} s ({r['steps_per_s']} steps/s)")
    for name, ratio in steps["batches_per_step"].items():
        print(f"{name} batches/s per {steps['fastest']} step/s: {ratio}x (target {steps['target']}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fit-rss", type=int, default=0, metavar="ROWS")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()), help="where --fit-rss keeps its data file")
    parser.add_argument("--baseline-round", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_round:
        print(json.dumps(baseline_round(args.baseline_round)))
        return
    RESULTS.mkdir(exist_ok=True)
    out_path = RESULTS / "pipeline.json"
    previous = json.loads(out_path.read_text()) if out_path.exists() else {}
    if args.fit_rss:
        measured = fit_rss(args.fit_rss, args.data_dir)
        previous.setdefault("fit_peak_rss", {})[str(args.fit_rss)] = measured
        print(json.dumps(measured, indent=2))
        _write(out_path, previous)
        return
    python = ensure_peers()
    from recsys_embed.artifacts import versions

    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "load_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory() as tmp:
        path = make_criteo(Path(tmp) / "criteo.parquet", args.rows)
        ours, base = [], []
        for _ in range(args.repeats):
            ours.append(ours_round(path))
            base.append(run_baseline(python, path))
            base[-1]["batches_w0"] = deepctr_batches(path)
        steps = training_steps(path)
    machine["load_after"] = list(os.getloadavg())
    summary = {"rows": args.rows, "repeats": args.repeats, "machine": machine,
               "versions": {"ours": versions(), "peers": peer_versions(python)}}  # fmt: skip
    summary.update(summarize(args.rows, ours, base))
    summary["training_step"] = batches_vs_steps(summary, steps)
    if "fit_peak_rss" in previous:
        summary["fit_peak_rss"] = previous["fit_peak_rss"]
    _write(out_path, summary)
    plot(summary, RESULTS / "pipeline.png")
    print_table(summary)


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
