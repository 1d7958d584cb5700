"""Binary codes for retrieval (BEBR's recurrent binarization) on a trained SASRec's or BERT4Rec's
item embeddings: recall@10 of Hamming search against exact float inner-product search, and queries per second.

A ``--model`` (SASRec, or BERT4Rec with ``benchmarks/sequential.py``'s Beauty settings) is trained
for ``--train-seconds`` on ``--data`` (``Beauty``: ``../shared/data/sequential/Beauty.txt``, read in
place; ``synthetic``: the library's synthetic sequences of ``--users`` users), then its retrieval
rows ``[items, D']`` (``NextItemModel.retrieval_vectors``: SASRec's item table, D' = D; BERT4Rec's
``[e_i, b_i]`` with the output bias, D' = D + 1) are binarized
(:func:`~recsys_embed.jobs.binarize.binarize_artifact`) for each ``T x m`` of ``--codes``, and an
untrained binarizer (random projections, 0 iterations) for reference. The queries are
``NextItemModel.query_vectors`` of the users' histories (their inner products with the retrieval
rows are the model's scores), so the exact top 10 is the model's own top 10.

Per code: recall@10 of (a) Hamming top 10 (queries binarized by the same binarizer; faiss
``IndexBinaryFlat``), (b) Hamming top ``--candidates`` reranked by the float query's inner
product with the decoded item rows, (c) as (b) with the Hamming search over the first step's bits
alone (``prefix(1)``); code bytes per item, binarizer bytes, fit seconds, reconstruction error. Speed, one thread, ``--timing-queries``
queries: faiss ``IndexBinaryFlat`` against faiss ``IndexFlatIP`` (exact float) on the item table
and on ``--scale-items`` random rows of the same widths (speed only). Writes
``benchmarks/results/binary_retrieval.json`` and ``.png`` (``binary_retrieval_bert4rec.*`` for BERT4Rec).

    python benchmarks/binary_retrieval.py [--model sasrec|bert4rec] [--data Beauty|synthetic]
        [--train-seconds 120] [--codes 1x64,2x64,4x64,2x32] [--scale-items 1000000]
    python benchmarks/binary_retrieval.py --smoke --out /tmp/binary.json     # tiny, for the tests
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys_embed.artifacts import versions
from recsys_embed.compression.retrieval import BinaryIndex, exact_top_k, import_faiss, recall_at_k, rerank
from recsys_embed.features import FIRST_VALUE_ID
from recsys_embed.jobs.binarize import binarize_artifact
from recsys_embed.jobs.next_item_model import NextItemSplit
from recsys_embed.jobs.sequential import SequentialConfig, encode_histories, train_sequential
from recsys_embed.models import BERT4RecConfig, SASRecConfig
from recsys_embed.pipelines.readers import read_user_lines
from recsys_embed.pipelines.synthetic.seq import write_sequences

RESULTS = Path(__file__).resolve().parent / "results"
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sequential"
K = 10


def events_of(args: argparse.Namespace, work: Path) -> pl.DataFrame:
    if args.data == "synthetic":
        write_sequences(work / "seq", users=args.users, seed=args.seed, progress=False)
        return pl.read_parquet(work / "seq")
    return read_user_lines(args.data_dir / f"{args.data}.txt").collect()


def model_config(args: argparse.Namespace) -> SASRecConfig | BERT4RecConfig:
    """The ``--model`` to train: SASRec as before; BERT4Rec as ``benchmarks/sequential.py`` trains it on Beauty."""
    if args.model == "sasrec":
        return SASRecConfig(max_len=args.max_len, dim=args.dim, num_layers=2, num_heads=1, dropout=0.2)
    return BERT4RecConfig(max_len=args.max_len, dim=args.dim, num_layers=2, num_heads=2, dropout=0.1, mask_prob=0.2,
                          last_item_prob=0.2)  # fmt: skip


def queries_per_second(search, queries: np.ndarray, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        search(queries)
        best = min(best, time.perf_counter() - start)
    return len(queries) / best


def speed(items: np.ndarray, codes: np.ndarray, queries: np.ndarray, query_codes: np.ndarray) -> dict:
    """Queries/s of exact float inner product (faiss IndexFlatIP) and Hamming (IndexBinaryFlat)."""
    faiss = import_faiss()
    flat = faiss.IndexFlatIP(items.shape[1])
    flat.add(np.ascontiguousarray(items, np.float32))
    binary = BinaryIndex(codes)
    float_qps = queries_per_second(lambda q: flat.search(q, K), np.ascontiguousarray(queries, np.float32))
    binary_qps = queries_per_second(lambda q: binary.search(q, K), query_codes)
    return {"items": len(items), "float_qps": float_qps, "binary_qps": binary_qps, "speedup": binary_qps / float_qps}


def measure(args: argparse.Namespace, work: Path) -> dict:
    events = events_of(args, work)
    config = SequentialConfig(model_config(args), epochs=args.epochs, max_seconds=args.train_seconds, eval_every=args.eval_every,
                              checkpoints=False, progress=False, seed=args.seed)  # fmt: skip
    report = train_sequential(events, config, work / "run")
    print(f"{args.model}: test NDCG@10 {report.test['ndcg@10']:.4f} (popularity {report.popularity_test['ndcg@10']:.4f})", flush=True)
    next_item = report.recommender.model
    items = next_item.retrieval_vectors()[FIRST_VALUE_ID:]
    histories = (events.sort("user_id", "timestamp").group_by("user_id", maintain_order=True)
                 .agg(pl.col("item_id").slice(0, pl.len() - 1))["item_id"])  # fmt: skip
    values, lengths = encode_histories(report.recommender.lookup, histories)
    users = NextItemSplit(values, lengths, torch.zeros(len(lengths), dtype=torch.long))
    queries = torch.cat([next_item.query_vectors(v, n) for v, n, _ in users.chunks(4096)])
    exact = exact_top_k(queries, items, K)
    codes_out, timing_rows = [], torch.randperm(len(queries), generator=torch.Generator().manual_seed(0))[: args.timing_queries]
    rng = np.random.default_rng(args.seed)  # random rows for the speed at scale
    big = rng.standard_normal((args.scale_items, items.shape[1]), dtype=np.float32) if args.scale_items else None
    for name in ["untrained", *args.codes.split(",")]:
        steps, bits = (1, args.dim) if name == "untrained" else map(int, name.split("x"))
        start = time.perf_counter()
        codes = binarize_artifact(work / "run" / "model", steps=steps, bits=bits,
                                  iterations=0 if name == "untrained" else args.iterations, seed=args.seed)  # fmt: skip
        fit_s = time.perf_counter() - start
        query_codes = codes.encode(queries)
        index = BinaryIndex(codes.codes)
        hamming = index.search(query_codes, K)[1]
        decoded = codes.decode()
        reranked = rerank(queries, index.search(query_codes, args.candidates)[1], decoded, K)
        first = BinaryIndex(codes.prefix(1)).search(codes.prefix(1, query_codes), args.candidates)[1]
        error = float((decoded - items).pow(2).sum(1).mean() / (items - items.mean(0)).pow(2).sum(1).mean())
        row = {
            "code": name, "steps": steps, "bits_per_step": bits, "bits_per_item": codes.bits_per_item,
            "bytes_per_item": codes.code_bytes() / len(items), "binarizer_bytes": codes.binarizer.state_bytes(),
            "fp32_bytes_per_item": items.shape[1] * 4, "fit_s": fit_s, "relative_reconstruction_error": error,
            "recall@10_hamming": recall_at_k(hamming, exact), "recall@10_reranked": recall_at_k(reranked, exact),
            "recall@10_first_step_reranked": recall_at_k(rerank(queries, first, decoded, K), exact),
            "speed_item_table": speed(items.numpy(), codes.codes, queries[timing_rows].numpy(), query_codes[timing_rows.numpy()]),
        }  # fmt: skip
        if args.scale_items and name != "untrained":
            big_codes = rng.integers(0, 256, (args.scale_items, codes.codes.shape[1]), dtype=np.uint8)
            row["speed_scaled"] = speed(big, big_codes, queries[timing_rows].numpy(), query_codes[timing_rows.numpy()])
        codes_out.append(row)
        print(f"{name:>9}: {codes.bits_per_item:>3} bits/item  recall@10 hamming {row['recall@10_hamming']:.3f}  "
              f"reranked {row['recall@10_reranked']:.3f} (step 1's bits: {row['recall@10_first_step_reranked']:.3f})  "
              f"qps binary {row['speed_item_table']['binary_qps']:,.0f} float {row['speed_item_table']['float_qps']:,.0f}", flush=True)
    return {"model": {"name": args.model, "test": report.test, "popularity_test": report.popularity_test, "items": len(items),
                      "dim": items.shape[1], "queries": len(queries), "random_recall@10": K / len(items)},
            "codes": codes_out}  # fmt: skip


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codes = result["codes"]
    candidates = result["config"]["candidates"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    x = np.arange(len(codes))
    left.bar(x - 0.27, [c["recall@10_hamming"] for c in codes], 0.27, label="Hamming top 10")
    left.bar(x, [c["recall@10_reranked"] for c in codes], 0.27, label=f"Hamming top {candidates}, reranked by the decoded rows")
    left.bar(x + 0.27, [c["recall@10_first_step_reranked"] for c in codes], 0.27, label=f"step 1's bits: Hamming top {candidates}, reranked")
    left.axhline(result["model"]["random_recall@10"], color="gray", ls=":", label="random")
    left.set_xticks(x, [f"{c['code']}\n{c['bytes_per_item']:.0f} B/item" for c in codes])
    left.set_ylabel("recall@10 vs exact float top 10")
    left.legend(fontsize=8)
    scaled = [c for c in codes if "speed_scaled" in c] or codes
    key = "speed_scaled" if "speed_scaled" in scaled[0] else "speed_item_table"
    labels = ["float IP", *[c["code"] for c in scaled]]
    qps = [scaled[0][key]["float_qps"], *[c[key]["binary_qps"] for c in scaled]]
    right.bar(labels, qps, color=["gray", *["C0"] * len(scaled)])
    right.set_yscale("log")
    right.set_ylabel(f"queries/s over {scaled[0][key]['items']:,} items (1 thread)")
    name = {"sasrec": "SASRec's item table", "bert4rec": "BERT4Rec's item rows [e_i, b_i]"}[result["model"]["name"]]
    fig.suptitle(f"binary codes of {name} ({result['config']['data']}, {result['model']['items']:,} items x {result['model']['dim']})")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("sasrec", "bert4rec"), default="sasrec")
    parser.add_argument("--data", default="Beauty", help="'synthetic' or a file stem under --data-dir (one user per line)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--users", type=int, default=20_000, help="synthetic users")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--train-seconds", type=float, default=120.0)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--codes", default="1x64,2x64,4x64,2x32", help="T x m of each code, comma separated")
    parser.add_argument("--iterations", type=int, default=300, help="Adam steps of each binarizer")
    parser.add_argument("--candidates", type=int, default=100, help="Hamming candidates reranked by the decoded rows")
    parser.add_argument("--timing-queries", type=int, default=500)
    parser.add_argument("--scale-items", type=int, default=1_000_000, help="random rows for the speed at scale (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic data, to check the script runs")
    parser.add_argument("--out", type=Path, default=None, help="default: results/binary_retrieval[_bert4rec].json")
    args = parser.parse_args(argv)
    args.out = args.out or RESULTS / ("binary_retrieval.json" if args.model == "sasrec" else f"binary_retrieval_{args.model}.json")
    if args.smoke:
        args.data, args.users, args.dim, args.max_len, args.epochs, args.train_seconds = "synthetic", 300, 16, 10, 1, 0.0
        args.codes, args.iterations, args.candidates, args.timing_queries, args.scale_items = "1x16,2x16", 20, 20, 50, 2000
    elif args.data != "synthetic" and not (args.data_dir / f"{args.data}.txt").is_file():
        parser.error(f"{args.data_dir / (args.data + '.txt')} is missing: pass --data synthetic or --data-dir")
    torch.set_num_threads(args.threads)
    import_faiss().omp_set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        result = measure(args, Path(work))
    result["config"] = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
                        "cpus": os.cpu_count(), "python": platform.python_version(), **versions()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    return result


if __name__ == "__main__":
    main()
