"""Score Parquet files with a saved CTR model from Python: in memory, then file to file with resume.

usage: python examples/score_parquet.py MODEL INPUT OUTPUT
    MODEL: an artifact directory (e.g. runs/demo/model after `make demo`)
    INPUT: Parquet file, directory or glob (e.g. data/synthetic-ctr-1000000-seed0/splits/test)
"""

import sys

import pyarrow.parquet as pq

from recsys_embed.jobs.score import Scorer, ScoreJob
from recsys_embed.jobs.score_files import input_files, run_local

model, source, output = sys.argv[1:4]

# in memory: an Arrow table in, one click probability per row out (the artifact's own pipeline, never refit)
scorer = Scorer.from_artifact(model)
first = input_files(source)[0].path
rows = pq.ParquetFile(first).read_row_group(0)
scores = scorer.score_table(rows)
print(f"{len(scores):,} rows of {first.name}: mean score {sum(scores.to_pylist()) / len(scores):.4f}")

# file to file: one output per input, a manifest, and resume=True skips what a killed run finished
job = ScoreJob(scorer, keep=["user_id", "item_id"], artifact=model)
print(run_local(job, source, output, batch_rows=4096, progress=False).summary())
print(run_local(job, source, output, resume=True, progress=False).summary())
