"""Readers for the public recommendation datasets users have on disk.

Each ``read_*`` returns a lazy ``polars.LazyFrame`` with named, typed columns (after an
optional one-pass check that raises ``ValueError`` naming the file and line of bad input),
and each format has a default :class:`recsys_embed.features.Schema`. Derived data
(behaviour histories with negatives, leave-one-out splits) is written to Parquet atomically.

- Criteo TSV: :func:`read_criteo`, :func:`criteo_schema`
- Avazu CSV: :func:`read_avazu`, :func:`avazu_schema`
- MovieLens 1M / 100K: :func:`read_movielens`, :func:`movielens_ctr`, :func:`movielens_schema`
- Amazon reviews: :func:`amazon_events` then :func:`behaviour_histories`, :func:`history_schema`
- Taobao UserBehavior: :func:`read_taobao` then :func:`behaviour_histories`, :func:`history_schema`
- BERT4Rec: :func:`user_sequences`, :func:`leave_one_out`, :func:`sequence_schema`
"""

from recsys_embed.pipelines.readers.amazon import amazon_events, read_amazon_metadata, read_amazon_reviews
from recsys_embed.pipelines.readers.avazu import avazu_schema, read_avazu
from recsys_embed.pipelines.readers.criteo import criteo_schema, read_criteo
from recsys_embed.pipelines.readers.histories import behaviour_histories, history_schema
from recsys_embed.pipelines.readers.movielens import movielens_ctr, movielens_schema, read_movielens
from recsys_embed.pipelines.readers.output import write_parquet_dir
from recsys_embed.pipelines.readers.sequences import leave_one_out, sequence_schema, user_sequences
from recsys_embed.pipelines.readers.taobao import read_taobao

__all__ = [
    "amazon_events",
    "avazu_schema",
    "behaviour_histories",
    "criteo_schema",
    "history_schema",
    "leave_one_out",
    "movielens_ctr",
    "movielens_schema",
    "read_amazon_metadata",
    "read_amazon_reviews",
    "read_avazu",
    "read_criteo",
    "read_movielens",
    "read_taobao",
    "sequence_schema",
    "user_sequences",
    "write_parquet_dir",
]
