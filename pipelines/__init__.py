"""The columnar feature pipeline: Parquet/CSV/TSV to fitted ids, Arrow batches and model batches.

``Pipeline(schema).fit(source)`` learns vocabularies, hash seeds and numeric stats in one
streaming pass; ``transform`` streams encoded Arrow record batches; ``batches`` streams
:class:`recsys_embed.batch.Batch` es (shuffled, in worker processes if asked);
``split_dataset`` writes train/valid/test Parquet splits.

The names below load on first use (PEP 562), so ``recsys-embed synth`` and the readers do not
pay for importing torch and torchrec (about 0.3 GB and several seconds).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BatchStream": "batching",
    "to_batch": "batching",
    "Pipeline": "pipeline",
    "split_dataset": "split",
    "FittedState": "state",
    "NumericState": "state",
    "TableState": "state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
