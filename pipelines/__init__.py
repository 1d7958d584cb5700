"""The columnar feature pipeline: Parquet/CSV/TSV to fitted ids, Arrow batches and model batches.

``Pipeline(schema).fit(source)`` learns vocabularies, hash seeds and numeric stats in one
streaming pass; ``transform`` streams encoded Arrow record batches; ``batches`` streams
:class:`recsys_embed.batch.Batch` es (shuffled, in worker processes if asked);
``split_dataset`` writes train/valid/test Parquet splits.
"""

from recsys_embed.pipelines.batching import BatchStream, to_batch
from recsys_embed.pipelines.pipeline import Pipeline
from recsys_embed.pipelines.split import split_dataset
from recsys_embed.pipelines.state import FittedState, NumericState, TableState

__all__ = ["BatchStream", "FittedState", "NumericState", "Pipeline", "TableState", "split_dataset", "to_batch"]
