"""Train SASRec (or BERT4Rec) for next-item recommendation and compare it with popularity.

Reads a file of one user per line, ``user_id item_id item_id ...`` (e.g. Amazon Beauty.txt of
the SASRec/ICLRec repositories), or writes synthetic sequences; leave-one-out split, full
ranking with the history excluded, validation every ``--eval-every`` steps, the best model kept;
then recommendations for one user, and 64-bit binary codes (BEBR) of the item rows for retrieval.

    python examples/train_sequential.py [--data Beauty.txt] [--model sasrec|bert4rec] [--minutes 30]
"""

import argparse
import tempfile
from pathlib import Path

import polars as pl

from recsys_embed.features import FIRST_VALUE_ID
from recsys_embed.jobs.binarize import binarize_artifact
from recsys_embed.jobs.sequential import SequentialConfig, load_sequential, scan_parquet_events, train_sequential
from recsys_embed.pipelines.readers import read_user_lines
from recsys_embed.pipelines.synthetic.seq import write_sequences

parser = argparse.ArgumentParser()
parser.add_argument("--data", help="one user per line (default: synthetic sequences)")
parser.add_argument("--model", default="sasrec", choices=["sasrec", "bert4rec"])
parser.add_argument("--users", type=int, default=3000, help="synthetic users")
parser.add_argument("--minutes", type=float, default=5.0)
parser.add_argument("--eval-every", type=int, default=100)
parser.add_argument("--run-dir", default="runs/sequential")
args = parser.parse_args()

synthetic = Path(tempfile.mkdtemp()) / "events"
events = read_user_lines(args.data) if args.data else scan_parquet_events(write_sequences(synthetic, users=args.users, progress=False).path)
config = SequentialConfig({"name": args.model, "max_len": 50, "dim": 64}, eval_every=args.eval_every,
                          max_seconds=60 * args.minutes, checkpoints=False, progress=False)
report = train_sequential(events, config, args.run_dir, overwrite=True)  # a rerun replaces the earlier run
print(report.summary())

recommender = load_sequential(Path(args.run_dir) / "model")  # raw item ids in and out
first = events.filter(pl.col("user_id") == pl.col("user_id").first()).sort("timestamp").collect()["item_id"].to_list()
(items,), (scores,) = recommender.recommend([first], k=5)  # one list per history, best first
print(f"recommended after {first[-5:]}: {items} (scores {[round(s, 2) for s in scores]})")

# retrieval: the model's scores are inner products of query_vectors [B, D'] with these item rows [V, D']
items = recommender.model.retrieval_vectors()[FIRST_VALUE_ID:]  # past the padding and out-of-vocabulary rows
codes = binarize_artifact(Path(args.run_dir) / "model", steps=2, bits=32)  # 2 x 32 bits an item, for Hamming search
print(f"retrieval rows {tuple(items.shape)}; binary codes {codes.codes.shape[1]} bytes an item (fp32: {4 * items.shape[1]})")
