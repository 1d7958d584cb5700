"""Binary codes of a saved model's items: :func:`~recsys_embed.compression.binary.binarize` of a
sequential model's retrieval rows (``NextItemModel.retrieval_vectors``: SASRec's item table rows,
BERT4Rec's ``[e_i, b_i]`` with the output bias) or of a named table group's rows, past the padding
and out-of-vocabulary rows. The model artifact is only read; the codes are a new artifact.

Example::

    >>> codes = binarize_artifact("runs/beauty/model", steps=2, bits=64)  # doctest: +SKIP
    >>> codes.save("runs/beauty/item-codes")  # doctest: +SKIP
    >>> binarize_model("runs/beauty/model", "runs/beauty/item-codes", steps=2, bits=64)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys_embed.compression.binary import BinaryCodes, binarize, binarize_table
from recsys_embed.features import FIRST_VALUE_ID
from recsys_embed.jobs.model_io import load_model


def binarize_artifact(path: str | Path, group: str | None = None, **options: Any) -> BinaryCodes:
    """Codes of rows ``FIRST_VALUE_ID ..`` (the vocabulary's values, row ``i`` of the codes is id
    ``i + FIRST_VALUE_ID``) of the artifact at ``path``: with ``group`` None, a sequential model's
    retrieval rows ``[V, D']`` (whose inner products with its query vectors are its scores); else
    table group ``group``'s rows ``[V, D]``. ``options`` go to :func:`~recsys_embed.compression.binary.binarize`."""
    loaded = load_model(path)
    if group is not None:
        return binarize_table(loaded.model.tables, group, first_row=FIRST_VALUE_ID, **options)
    if loaded.task != "sequential":
        raise ValueError(f"binarize: artifact {path} is a {loaded.task!r} model; name the table group to binarize")
    return binarize(loaded.model.retrieval_vectors()[FIRST_VALUE_ID:], **options)


def binarize_model(path: str | Path, output: str | Path, group: str | None = None, **options: Any) -> BinaryCodes:
    """:func:`binarize_artifact` of the artifact at ``path``, its codes saved as the artifact ``output``
    (another directory: ``ValueError`` if it is ``path``)."""
    if Path(output).resolve() == Path(path).resolve():
        raise ValueError(f"binarize: the output {output} is the input model; write another directory")
    codes = binarize_artifact(path, group, **options)
    codes.save(output)
    return codes
