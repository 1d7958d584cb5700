"""Datasets derived from what the readers return, written to Parquet atomically.

- Behaviour histories with popularity negatives (DIN, from Amazon or Taobao events):
  :func:`behaviour_histories`, :func:`history_schema`
- Per-user item sequences, the leave-one-out split and training windows (BERT4Rec, SASRec):
  :func:`user_sequences`, :func:`leave_one_out`, :func:`sliding_windows`, :func:`sequence_schema`
- Atomic output: :func:`write_parquet_dir`
"""

from recsys_embed.pipelines.derived.histories import behaviour_histories, history_schema
from recsys_embed.pipelines.derived.output import write_parquet_dir
from recsys_embed.pipelines.derived.sequences import leave_one_out, sequence_schema, sliding_windows, user_sequences

__all__ = [
    "behaviour_histories",
    "history_schema",
    "leave_one_out",
    "sequence_schema",
    "sliding_windows",
    "user_sequences",
    "write_parquet_dir",
]
