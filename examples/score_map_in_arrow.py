"""Scoring inside another engine: a Spark ``mapInArrow``-style function over Arrow record batches.

Spark hands each task an iterator of ``pyarrow.RecordBatch`` es and expects one back; the
scorer loads once per task and scores batch by batch. With Spark::

    scored = df.mapInArrow(score_partition, "user_id long, item_id long, score float")

Without Spark (as here), the same function runs over the record batches of a Parquet file.

usage: python examples/score_map_in_arrow.py MODEL PARQUET_FILE
"""

import sys
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from recsys_embed.jobs.score import Scorer

MODEL = sys.argv[1]


def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    scorer = Scorer.from_artifact(MODEL)  # once per task, on the executor
    for batch in batches:
        yield pa.RecordBatch.from_arrays([batch.column("user_id"), batch.column("item_id"), scorer.score_table(batch)],
                                         names=["user_id", "item_id", "score"])


batches = pq.ParquetFile(sys.argv[2]).iter_batches(batch_size=1000)  # what Spark would hand one task
scored = pa.Table.from_batches(score_partition(batches))
print(f"scored {scored.num_rows:,} rows in {len(scored.to_batches())} Arrow batches; schema {scored.schema.names}")
