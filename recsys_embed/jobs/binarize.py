"""Binary codes of a saved model's item table: :func:`~recsys_embed.compression.binary.binarize` of
the rows of one table group of an artifact (a sequential model's ``items`` by default), past its
padding and out-of-vocabulary rows. The model artifact is only read; the codes are a new artifact.

Example::

    >>> codes = binarize_artifact("runs/beauty/model", steps=2, bits=64)  # doctest: +SKIP
    >>> codes.save("runs/beauty/item-codes")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys_embed.compression.binary import BinaryCodes, binarize_table
from recsys_embed.features import FIRST_VALUE_ID
from recsys_embed.jobs.model_io import load_model


def binarize_artifact(path: str | Path, group: str | None = None, **options: Any) -> BinaryCodes:
    """Codes of rows ``FIRST_VALUE_ID ..`` (the vocabulary's values, row ``i`` of the codes is id
    ``i + FIRST_VALUE_ID``) of table group ``group`` of the artifact at ``path``; ``group`` defaults
    to a sequential model's item group. ``options`` go to :func:`~recsys_embed.compression.binary.binarize`."""
    loaded = load_model(path)
    if group is None:
        if loaded.task != "sequential":
            raise ValueError(f"binarize: artifact {path} is a {loaded.task!r} model; name the table group to binarize")
        group = loaded.model.group
    return binarize_table(loaded.model.tables, group, first_row=FIRST_VALUE_ID, **options)
