"""Synthetic CTR data with a known click model: the embedded default dataset of ``make demo``.

Each row is one impression of an item to a user at a time, with the user's click history::

    user_id item_id item_category item_brand user_age user_gender user_city hour device
    price item_clicks user_activity timestamp hist_item_id hist_item_category label p_true

``p_true`` is the true click probability and ``label ~ Bernoulli(p_true)``, so the oracle AUC
(the best AUC any model can reach) of any split is :func:`oracle_auc`. The click model (first
order effects, rank-4 field interactions, and a soft-max similarity of the candidate to the
user's click history) is documented in :mod:`recsys_embed.pipelines.synthetic.click_model`.
``hist_item_id`` holds the items the user clicked strictly before the row, most recent last,
at most 50; ``hist_item_category`` their categories.

Example::

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "ctr"
    >>> summary = write_ctr(out, rows=2_000, seed=1, progress=False)
    >>> summary.rows, [f.name for f in summary.files], 0.5 < summary.oracle_auc < 1.0
    (2000, ['part-00000.parquet'], True)
    >>> abs(oracle_auc(out) - summary.oracle_auc) < 1e-4
    True
    >>> sorted(ctr_schema().source_columns) == sorted(set(CTR_ARROW_SCHEMA.names) - {"p_true", "timestamp"})
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from recsys_embed.features import FeatureSpec, Schema
from recsys_embed.metrics import oracle_auc as _oracle_auc
from recsys_embed.pipelines.synthetic.click_model import CTR_ARROW_SCHEMA, MAX_HISTORY, ClickModel, CtrWorld
from recsys_embed.pipelines.sources import resolve_files
from recsys_embed.pipelines.synthetic.output import ParquetParts

__all__ = ["CTR_ARROW_SCHEMA", "MAX_HISTORY", "CtrSummary", "ctr_schema", "oracle_auc", "write_ctr"]

BLOCK_ROWS = 50_000  # generation block; the data does not depend on row_group_size
AUC_BINS = 1 << 20

@dataclass
class CtrSummary:
    """What :func:`write_ctr` wrote. ``users``/``items``: distinct values in the rows;
    ``oracle_auc``: AUC of ``p_true`` vs ``label`` over all rows (from a 2^20-bin histogram,
    within 1e-5 of :func:`oracle_auc`)."""

    path: Path
    rows: int
    files: list[Path] = field(default_factory=list)
    users: int = 0
    items: int = 0
    positive_rate: float = 0.0
    oracle_auc: float = 0.0

    def describe(self) -> str:
        return (
            f"wrote {self.rows:,} rows in {len(self.files)} file(s) to {self.path}: {self.users:,} users, "
            f"{self.items:,} items, positive rate {self.positive_rate:.3f}, oracle AUC {self.oracle_auc:.4f}"
        )


def ctr_schema(embedding_dim: int = 16) -> Schema:
    """The default schema of the synthetic CTR data (``p_true`` and ``timestamp`` are no features)."""
    categorical = ["user_id", "item_id", "item_category", "item_brand", "user_age", "user_gender", "user_city",
                   "hour", "device"]  # fmt: skip
    features = [FeatureSpec(name, embedding_dim=embedding_dim) for name in categorical]
    features += [
        FeatureSpec("hist_item_id", kind="sequence", table="item_id", max_len=MAX_HISTORY, embedding_dim=embedding_dim),
        FeatureSpec(
            "hist_item_category", kind="sequence", table="item_category", max_len=MAX_HISTORY,
            embedding_dim=embedding_dim,
        ),  # fmt: skip
    ]
    features += [
        FeatureSpec(name, kind="numeric", transform="log1p_standardize")
        for name in ("price", "item_clicks", "user_activity")
    ]
    return Schema(features=features, label="label", group="user_id")


def write_ctr(
    out_dir: str | Path,
    rows: int,
    seed: int = 0,
    row_group_size: int = 100_000,
    overwrite: bool = False,
    progress: bool = True,
) -> CtrSummary:
    """Generate ``rows`` impressions and write them as Parquet parts (``part-00000.parquet``, one
    per million rows, row groups of ``row_group_size``) into ``out_dir``, streaming in blocks.

    The same ``seed`` and ``rows`` give byte-identical files. Raises ``ValueError`` (and leaves no
    files) when ``rows <= 0`` or ``out_dir`` is unwritable, or non-empty without ``overwrite``.
    """
    if not isinstance(rows, (int, np.integer)) or isinstance(rows, bool) or rows <= 0:
        raise ValueError(f"rows must be a positive integer, got {rows!r}")
    meta = {"generator": "recsys_embed.pipelines.synthetic.ctr", "version": 1, "seed": seed, "rows": int(rows)}
    schema = CTR_ARROW_SCHEMA.with_metadata({"recsys_embed.synthetic": json.dumps(meta)})
    parts = ParquetParts(out_dir, schema, row_group_size, overwrite=overwrite)  # checks before the set-up
    rng = np.random.default_rng(seed)
    world = CtrWorld(rng, int(rows), ClickModel())
    auc_hist = np.zeros((2, AUC_BINS), dtype=np.int64)
    with parts, tqdm(
        total=rows, unit="row", unit_scale=True, desc="synthetic ctr", disable=not progress
    ) as bar:
        done = 0
        while done < rows:
            n = min(BLOCK_ROWS, rows - done)
            table = world.block(rng, n)
            label = table["label"].to_numpy()
            bins = np.minimum((table["p_true"].to_numpy() * AUC_BINS).astype(np.int64), AUC_BINS - 1)
            auc_hist[0] += np.bincount(bins[label == 0], minlength=AUC_BINS)
            auc_hist[1] += np.bincount(bins[label == 1], minlength=AUC_BINS)
            parts.write(table.replace_schema_metadata(schema.metadata))
            done += n
            bar.update(n)
    positives = int(auc_hist[1].sum())
    return CtrSummary(
        path=parts.out_dir,
        rows=int(rows),
        files=parts.files,
        users=int(world.user_seen.sum()),
        items=int(world.item_seen.sum()),
        positive_rate=positives / rows,
        oracle_auc=_binned_auc(auc_hist[0], auc_hist[1]),
    )


def oracle_auc(path: str | Path) -> float:
    """AUC of ``p_true`` vs ``label`` over Parquet data (a file, a directory or a glob; see
    :func:`recsys_embed.pipelines.sources.resolve_files`), reading only those two columns."""
    p_true, labels = [], []
    for f in resolve_files(path):
        if f.suffix != ".parquet":
            raise ValueError(f"{f}: oracle_auc reads Parquet files with columns 'p_true' and 'label'")
        columns = pq.read_schema(f).names
        if "p_true" not in columns or "label" not in columns:
            raise ValueError(f"{f}: expected columns 'p_true' and 'label', found {columns}")
        table = pq.read_table(f, columns=["p_true", "label"])
        p_true.append(table["p_true"].to_numpy())
        labels.append(table["label"].to_numpy())
    return _oracle_auc(np.concatenate(p_true), np.concatenate(labels))


def _binned_auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """AUC from per-bin negative/positive counts over ascending score bins (ties count one half)."""
    n_neg, n_pos = neg.sum(), pos.sum()
    if n_neg == 0 or n_pos == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float(((neg_below + 0.5 * neg) * pos).sum() / (n_neg * n_pos))


