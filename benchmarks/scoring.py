"""Batch scoring throughput and peak memory, side by side in one run.

For DIN and AutoInt+ (defaults of ``benchmarks/quality.py``: ``dnn [256, 128]``, 4 heads) on
the synthetic CTR data (``--rows`` rows in ``--files`` Parquet files), each measured in its own
subprocess so that its peak RSS (``ru_maxrss``) is its own:

(a) ``forward``: the model alone on batches encoded beforehand (at most ``--forward-rows``);
(b) ``local``: the local engine end to end, Parquet to Parquet (``run_local``);
(c) ``ray``: the Ray engine with one actor of one CPU on a local instance of 2 CPUs, startup
    included (the peak RSS is the driver's; the actor is another process).

Target: (b) at least 75% of (a). BERT4Rec ``recommend``: users/s of the recommend job (full
ranking over all items, top 10, history excluded) vs a plain loop over
``SequentialRecommender.recommend``. The models are untrained (throughput does not depend on
the weights). One torch thread everywhere. Writes ``benchmarks/results/scoring.json`` and ``.png``.

    python benchmarks/scoring.py [--rows 200000] [--files 4] [--users 2000] [--no-ray]
    python benchmarks/scoring.py --rows 20000000 --files 20 --no-ray --models din \
        --out benchmarks/results/scoring_20m.json   # the 20M-row peak RSS run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {"din": {"name": "din"}, "autoint_plus": {"name": "autoint", "num_heads": 4, "dnn": [256, 128]}}
TARGET = 0.75


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(kind: str, model: str, data: str, out: str, batch: int, forward_rows: int) -> dict:
    """One measurement in this (child) process: ``{"rows", "seconds", "rows_per_s", "peak_rss_mb"}``."""
    import pyarrow.parquet as pq
    import torch

    torch.set_num_threads(1)
    from recsys_embed.jobs.score import Scorer, ScoreJob
    from recsys_embed.jobs.score_files import input_files, run_local

    if kind == "recommend":
        from recsys_embed.jobs.recommend import RecommendJob

        start = time.perf_counter()
        report = run_local(RecommendJob.from_artifact(model, k=10, exclude_history=True), data, out, batch_rows=batch, progress=False)
        users = sum(r.output_rows for r in report.files)
        return {"users": users, "seconds": time.perf_counter() - start, "users_per_s": users / (time.perf_counter() - start),
                "peak_rss_mb": peak_rss_mb()}  # fmt: skip
    if kind == "recommend_loop":
        import polars as pl

        from recsys_embed.jobs.sequential import load_sequential

        recommender = load_sequential(model)
        recommender.exclude_history = True
        start = time.perf_counter()
        users = 0
        for item in input_files(data):
            histories = pl.read_parquet(item.path).sort("timestamp", "item_id").group_by("user_id", maintain_order=True).agg("item_id")
            for history in histories["item_id"].to_list():
                recommender.recommend([history], k=10)
                users += 1
        seconds = time.perf_counter() - start
        return {"users": users, "seconds": seconds, "users_per_s": users / seconds, "peak_rss_mb": peak_rss_mb()}
    job = ScoreJob.from_artifact(model, keep=["user_id", "item_id"])
    if kind == "forward":
        scorer: Scorer = job.scorer
        batches, rows = [], 0
        for item in input_files(data):
            for record in pq.ParquetFile(item.path).iter_batches(batch_size=batch, columns=scorer.columns):
                if rows >= forward_rows:
                    break
                batches.append(scorer.encode(record))
                rows += record.num_rows
        scorer.forward(batches[0])  # warm-up (first-call set-up), as the engines pay it once per run too
        start = time.perf_counter()
        for encoded in batches:
            scorer.forward(encoded)
        seconds = time.perf_counter() - start
    elif kind == "local":
        report = run_local(job, data, out, batch_rows=batch, progress=False)
        rows, seconds = sum(r.rows for r in report.files), report.seconds
    else:
        from recsys_embed.jobs.score_ray import RayOptions, run_ray

        report = run_ray(job, data, out, RayOptions(num_cpus=2, actors=1, actor_cpus=1), batch_rows=batch, progress=False)
        rows, seconds = sum(r.rows for r in report.files), report.seconds
        assert not report.failed, report.failed
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "peak_rss_mb": peak_rss_mb()}


def child(kind: str, model: Path, data: Path, out: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", kind, str(model), str(data), str(out), "--batch-size", str(args.batch_size),
               "--forward-rows", str(args.forward_rows)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=24 * 3600)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} on {model.name} failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"  {kind:15s} {model.name:14s} {json.dumps({k: round(v, 1) for k, v in measured.items()})}", flush=True)
    return measured


def build(work: Path, args: argparse.Namespace) -> tuple[Path, dict[str, Path], Path, Path, int]:
    """CTR data, one artifact per model, sequences, a BERT4Rec artifact and its number of items."""
    import polars as pl
    import torch

    from recsys_embed.jobs.builders import build_model, build_tables, layout_for_model
    from recsys_embed.jobs.model_io import save_model
    from recsys_embed.jobs.ranking_model import RankingModel
    from recsys_embed.jobs.next_item_model import NextItemModel
    from recsys_embed.jobs.sequential import FEATURE, TASK, SequentialConfig, sequence_data
    from recsys_embed.models import BERT4Rec, BERT4RecConfig
    from recsys_embed.models.next_item_ranking import FIRST_ITEM_ID
    from recsys_embed.pipelines import Pipeline
    from recsys_embed.pipelines.synthetic.ctr import ctr_schema, write_ctr
    from recsys_embed.pipelines.synthetic.seq import write_sequences
    from recsys_embed.tables import TableOptimizer

    torch.manual_seed(0)
    data = work / "ctr"
    data.mkdir()
    per_file = -(-args.rows // args.files)
    for i in range(args.files):  # files of their own seeds: the same rows per file whatever --rows
        rows = min(per_file, args.rows - i * per_file)
        write_ctr(work / "tmp", rows=rows, seed=i, overwrite=True, progress=False)
        (work / "tmp" / "part-00000.parquet").rename(data / f"part-{i:04d}.parquet")
    schema = ctr_schema()
    pipeline = Pipeline(schema).fit(data / "part-0000.parquet")
    artifacts = {}
    for name in args.models.split(","):
        spec = MODELS[name]
        layout = layout_for_model({"name": "per_feature"}, spec)
        tables = build_tables(layout, schema, pipeline.num_embeddings, TableOptimizer("rowwise_adagrad", lr=0.05))
        model = build_model(spec, tables.shapes(len(schema.dense_features)), schema)
        artifacts[name] = save_model(work / name, pipeline, RankingModel(tables, model), layout, spec)
    write_sequences(work / "seq", users=args.users, seed=0, progress=False)
    config = SequentialConfig(model=BERT4RecConfig())  # the sequential job's defaults for BERT4Rec, untrained
    seq = sequence_data(pl.read_parquet(work / "seq"), config.model, config.min_length)
    rows = seq.pipeline.num_embeddings[seq.pipeline.schema[FEATURE].table]
    tables = build_tables(config.layout, seq.pipeline.schema, seq.pipeline.num_embeddings, config.table_optimizer)
    model = NextItemModel(tables, BERT4Rec(config.model, rows), seq.pipeline.schema, FEATURE)
    save_model(work / "bert4rec", seq.pipeline, model, dict(config.layout), {"name": "bert4rec", **asdict(config.model)},
               task=TASK, task_settings={"feature": FEATURE, "exclude_history": True})
    return data, artifacts, work / "seq", work / "bert4rec", rows - FIRST_ITEM_ID


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ("forward", "local", "ray") if k in next(iter(result["ctr"].values()))]
    fig, (speed, memory, rec) = plt.subplots(1, 3, figsize=(13, 3.8))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        x = [j + (i - (len(kinds) - 1) / 2) * width for j in range(len(result["ctr"]))]
        bars = speed.bar(x, [m[kind]["rows_per_s"] for m in result["ctr"].values()], width, label=kind)
        speed.bar_label(bars, fmt="%.0f", fontsize=7)
        bars = memory.bar(x, [m[kind]["peak_rss_mb"] for m in result["ctr"].values()], width, label=kind)
        memory.bar_label(bars, fmt="%.0f", fontsize=7)
    for ax, label in ((speed, "rows/s (1 thread)"), (memory, "peak RSS, MB")):
        ax.set_xticks(range(len(result["ctr"])), list(result["ctr"]))
        ax.set(ylabel=label, title=f"{result['config']['rows']:,} rows")
        ax.legend(fontsize=8)
    names = ["recommend job", "loop of recommend()"]
    bars = rec.bar(names, [result["recommend"]["job"]["users_per_s"], result["recommend"]["loop"]["users_per_s"]], color=["#4c72b0", "#999999"])
    rec.bar_label(bars, fmt="%.0f", fontsize=8)
    rec.set(ylabel="users/s", title=f"BERT4Rec top-10, {result['recommend']['items']:,} items")
    fig.tight_layout()
    fig.savefig(path.with_suffix(".tmp.png"), dpi=120)
    path.with_suffix(".tmp.png").rename(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--users", type=int, default=2_000, help="BERT4Rec users (items: users / 4, at least 2,000)")
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--forward-rows", type=int, default=200_000, help="rows encoded beforehand for (a)")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {sorted(MODELS)}")
    parser.add_argument("--out", type=Path, default=RESULTS / "scoring.json")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "MODEL", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if unknown := set(args.models.split(",")) - set(MODELS):
        parser.error(f"--models: unknown {sorted(unknown)}; expected some of {sorted(MODELS)}")
    if args.child:
        kind, model, data, out = args.child
        print(json.dumps(measure(kind, model, data, out, args.batch_size, args.forward_rows)))
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data, artifacts, seq, bert4rec, items = build(work, args)
        kinds = ["forward", "local"] + ([] if args.no_ray else ["ray"])
        ctr = {name: {kind: child(kind, artifact, data, work / f"out-{name}-{kind}", args) for kind in kinds}
               for name, artifact in artifacts.items()}  # fmt: skip
        job = child("recommend", bert4rec, seq, work / "out-recommend", args)
        loop = child("recommend_loop", bert4rec, seq, work / "unused", args)
    for name, measured in ctr.items():
        measured["local_vs_forward"] = measured["local"]["rows_per_s"] / measured["forward"]["rows_per_s"]
        if "ray" in measured:
            measured["ray_vs_local"] = measured["ray"]["rows_per_s"] / measured["local"]["rows_per_s"]
    result = {
        "config": {"rows": args.rows, "files": args.files, "batch_size": args.batch_size, "threads": 1, "users": args.users,
                   "models": args.models.split(",")},
        "target_local_vs_forward": TARGET,
        "ctr": ctr,
        "recommend": {"items": items, "job": job, "loop": loop, "speedup": job["users_per_s"] / loop["users_per_s"]},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "note": "shared 2-core machine, loaded by other jobs"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".tmp.json")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.rename(args.out)
    plot(result, args.out.with_suffix(".png"))
    for name, measured in ctr.items():
        ray = f", Ray/local {measured['ray_vs_local']:.2f}" if "ray_vs_local" in measured else ""
        print(f"{name}: local {measured['local']['rows_per_s']:,.0f} rows/s = {measured['local_vs_forward']:.0%} of forward "
              f"(target {TARGET:.0%}){ray}; peak RSS local {measured['local']['peak_rss_mb']:.0f} MB")
    print(f"recommend: {job['users_per_s']:,.0f} users/s vs loop {loop['users_per_s']:,.0f} ({result['recommend']['speedup']:.1f}x)")
    return result


if __name__ == "__main__":
    main()
