"""Readers for the public recommendation datasets users have on disk.

Each ``read_*`` returns a lazy ``polars.LazyFrame`` with named, typed columns (after an
optional one-pass check that raises ``ValueError`` naming the file and line of bad input),
and each format has a default :class:`recsys_embed.features.Schema`. Data derived from what
they read (behaviour histories with negatives, leave-one-out splits) is built by
:mod:`recsys_embed.pipelines.derived`.

Formats with several layouts (separator, header) sniff line 1 and take ``separator=`` /
``header=`` options; an error says which layout the file was read as and how to pass another.

- Criteo TSV, or CSV with a header: :func:`read_criteo`, :func:`criteo_schema`
- Avazu CSV, raw or pre-encoded (``label, feat_1, ...``): :func:`read_avazu`, :func:`avazu_schema`
- MovieLens 1M / 100K / CSV with named columns: :func:`read_movielens`, :func:`movielens_ctr`, :func:`movielens_schema`
- libFM ``label idx:value ...`` (fields given or inferred, values kept): :func:`read_libfm`, :func:`libfm_schema`
- Amazon reviews, JSON lines or DIN's CSV: :func:`amazon_events` (then ``derived.behaviour_histories``)
- Taobao UserBehavior: :func:`read_taobao` (then ``derived.behaviour_histories``)
- One user per line, ``user_id item_id item_id ...`` (SASRec/ICLRec's Amazon Beauty, Toys):
  :func:`read_user_lines` (then ``derived.user_sequences``)
"""

from recsys_embed.pipelines.readers.amazon import amazon_events, read_amazon_metadata, read_amazon_reviews
from recsys_embed.pipelines.readers.avazu import avazu_schema, read_avazu
from recsys_embed.pipelines.readers.criteo import criteo_schema, read_criteo
from recsys_embed.pipelines.readers.libfm import libfm_schema, read_libfm
from recsys_embed.pipelines.readers.movielens import movielens_ctr, movielens_schema, read_movielens
from recsys_embed.pipelines.readers.taobao import read_taobao
from recsys_embed.pipelines.readers.user_lines import read_user_lines

__all__ = [
    "amazon_events",
    "avazu_schema",
    "criteo_schema",
    "libfm_schema",
    "movielens_ctr",
    "movielens_schema",
    "read_amazon_metadata",
    "read_amazon_reviews",
    "read_avazu",
    "read_criteo",
    "read_libfm",
    "read_movielens",
    "read_taobao",
    "read_user_lines",
]
