"""Synthetic interaction sequences for next-item prediction (BERT4Rec), with a latent interest model.

One row per interaction: ``user_id``, ``item_id``, ``timestamp`` (int64 Unix seconds, strictly
increasing per user); rows are ordered by user, then time. Items belong to interest clusters,
with Zipf popularity and a random series order (each item but the last has a successor) inside
them. Each user has 2-4 interest clusters that drift slowly (each step replaces one of them with a
fresh cluster with probability ``drift``); every next item is, by the probabilities in
:class:`SequenceModel`:

- ``p_series``: the series successor of the previous item,
- ``p_stay``: a Zipf draw from the previous item's cluster,
- ``p_noise``: a Zipf draw from a cluster drawn by cluster popularity,
- otherwise: a Zipf draw from one of the user's current interests.

A user never repeats an item (a repeat is redrawn; after 12 failed draws the step is dropped,
which practically never happens). Lengths follow a lognormal clipped to ``[min_len, max_len]``.
The previous items carry most of the signal, so a sequential model beats a popularity baseline by
a wide margin.

Example::

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "seq"
    >>> summary = write_sequences(out, users=300, seed=1, progress=False)
    >>> summary.users, summary.rows >= 5 * 300, [f.name for f in summary.files]
    (300, True, ['part-00000.parquet'])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from recsys_embed.pipelines.synthetic.output import ParquetParts
from recsys_embed.pipelines.synthetic.sampling import power_law_ranks

BLOCK_USERS = 4096  # generation block; the data does not depend on how it is written
START_TIMESTAMP = 1_704_067_200  # 2024-01-01 00:00:00 UTC
SEQ_ARROW_SCHEMA = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("timestamp", pa.int64())])


@dataclass(frozen=True)
class SequenceModel:
    """The parameters of the sequence model (see the module docstring)."""

    min_len: int = 5
    max_len: int = 200
    median_len: float = 30.0
    len_sigma: float = 0.8
    p_series: float = 0.2
    p_stay: float = 0.45
    p_noise: float = 0.05
    min_interests: int = 2
    max_interests: int = 4
    drift: float = 0.02
    item_exponent: float = 1.0
    cluster_exponent: float = 0.8
    items_per_cluster: int = 100
    mean_gap_seconds: float = 6 * 3600.0
    start_span_days: int = 180
    redraws: int = 4  # model redraws of a repeated item, then ``uniform_redraws`` uniform ones
    uniform_redraws: int = 8


@dataclass
class SeqSummary:
    """What :func:`write_sequences` wrote: ``rows`` interactions of ``users`` users;
    ``items``: distinct items in the rows."""

    path: Path
    rows: int
    users: int
    files: list[Path] = field(default_factory=list)
    items: int = 0

    @property
    def mean_length(self) -> float:
        return self.rows / self.users

    def describe(self) -> str:
        return (
            f"wrote {self.rows:,} interactions of {self.users:,} users in {len(self.files)} file(s) "
            f"to {self.path}: {self.items:,} items, mean length {self.mean_length:.1f}"
        )


def write_sequences(
    out_dir: str | Path,
    users: int,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> SeqSummary:
    """Generate the interaction sequences of ``users`` users into ``out_dir`` as Parquet parts,
    streaming in blocks of users. The same ``seed`` and ``users`` give byte-identical files.

    Raises ``ValueError`` (and leaves no files) when ``users <= 0`` or ``out_dir`` is unwritable,
    or non-empty without ``overwrite``.
    """
    if not isinstance(users, (int, np.integer)) or isinstance(users, bool) or users <= 0:
        raise ValueError(f"users must be a positive integer, got {users!r}")
    meta = {"generator": "recsys_embed.pipelines.synthetic.seq", "version": 1, "seed": seed, "users": int(users)}
    schema = SEQ_ARROW_SCHEMA.with_metadata({"recsys_embed.synthetic": json.dumps(meta)})
    parts = ParquetParts(out_dir, schema, overwrite=overwrite)  # checks the output before the set-up
    rng = np.random.default_rng(seed)
    world = _SeqWorld(rng, int(users), SequenceModel())
    with parts, tqdm(
        total=users, unit="user", unit_scale=True, desc="synthetic sequences", disable=not progress
    ) as bar:
        for first in range(0, users, BLOCK_USERS):
            n = min(BLOCK_USERS, users - first)
            parts.write(world.block(rng, first, n).replace_schema_metadata(schema.metadata))
            bar.update(n)
    return SeqSummary(
        path=parts.out_dir, rows=parts.rows, users=int(users), files=parts.files, items=int(world.item_seen.sum())
    )


class _SeqWorld:
    """Items in clusters: ``users / 4`` items (2,000 to 200,000), ``items_per_cluster`` a cluster
    on average; clusters have Zipf popularity, and so have the items inside a cluster."""

    def __init__(self, rng: np.random.Generator, users: int, model: SequenceModel) -> None:
        self.model = model
        n_items = int(np.clip(users // 4, 2_000, 200_000))
        n_clusters = max(10, n_items // model.items_per_cluster)
        self.item_cluster = rng.integers(0, n_clusters, n_items)
        self.cluster_items = np.argsort(self.item_cluster, kind="stable")  # popularity order inside a cluster
        self.cluster_size = np.bincount(self.item_cluster, minlength=n_clusters)
        self.cluster_start = np.concatenate(([0], np.cumsum(self.cluster_size)))
        series = np.lexsort((rng.random(n_items), self.item_cluster))  # a random series order per cluster
        same_cluster = self.item_cluster[series[1:]] == self.item_cluster[series[:-1]]
        self.series_next = np.full(n_items, -1, dtype=np.int64)
        self.series_next[series[:-1][same_cluster]] = series[1:][same_cluster]
        self.cluster_by_popularity = rng.permutation(n_clusters)
        self.item_seen = np.zeros(n_items, dtype=bool)

    def _popular_clusters(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        ranks = power_law_ranks(rng, len(self.cluster_by_popularity), self.model.cluster_exponent, size=size)
        return self.cluster_by_popularity[ranks]

    def _zipf_in(self, rng: np.random.Generator, cluster: np.ndarray) -> np.ndarray:
        ranks = power_law_ranks(rng, self.cluster_size[cluster], self.model.item_exponent)
        return self.cluster_items[self.cluster_start[cluster] + ranks]

    def _next_items(self, rng: np.random.Generator, prev: np.ndarray, interests: np.ndarray,
                    n_interests: np.ndarray) -> np.ndarray:  # fmt: skip
        """One next item per row from the mixture; ``prev`` is -1 before a user's first item."""
        m = self.model
        n = len(prev)
        r = rng.random(n)
        has_prev = prev >= 0
        prev_cluster = self.item_cluster[np.maximum(prev, 0)]
        pick = (rng.random(n) * n_interests).astype(np.int64)
        cluster = interests[np.arange(n), pick]
        stay = has_prev & (r >= m.p_series) & (r < m.p_series + m.p_stay)
        noise = (r >= m.p_series + m.p_stay) & (r < m.p_series + m.p_stay + m.p_noise)
        cluster = np.where(stay, prev_cluster, cluster)
        cluster[noise] = self._popular_clusters(rng, int(noise.sum()))
        items = self._zipf_in(rng, cluster)
        successor = self.series_next[np.maximum(prev, 0)]
        series = has_prev & (r < m.p_series) & (successor >= 0)
        items[series] = successor[series]
        return items

    def block(self, rng: np.random.Generator, first_user: int, n: int) -> pa.Table:
        """The interactions of users ``first_user .. first_user + n - 1`` as a ``SEQ_ARROW_SCHEMA`` table."""
        m = self.model
        lengths = np.clip(np.round(rng.lognormal(np.log(m.median_len), m.len_sigma, n)), m.min_len, m.max_len)
        lengths = lengths.astype(np.int64)
        n_interests = rng.integers(m.min_interests, m.max_interests + 1, n)
        interests = self._popular_clusters(rng, (n, m.max_interests))
        seq = np.full((n, m.max_len), -1, dtype=np.int64)
        prev = np.full(n, -1, dtype=np.int64)
        for t in range(int(lengths.max())):
            act = np.flatnonzero(t < lengths)
            items = self._next_items(rng, prev[act], interests[act], n_interests[act])
            for attempt in range(m.redraws + m.uniform_redraws + 1):
                repeated = np.flatnonzero((seq[act, :t] == items[:, None]).any(axis=1))
                if len(repeated) == 0 or attempt == m.redraws + m.uniform_redraws:
                    break
                if attempt < m.redraws:
                    r = act[repeated]
                    items[repeated] = self._next_items(rng, prev[r], interests[r], n_interests[r])
                else:
                    items[repeated] = rng.integers(0, len(self.item_cluster), len(repeated))
            keep = np.ones(len(act), dtype=bool)
            keep[repeated] = False
            seq[act[keep], t] = items[keep]
            prev[act[keep]] = items[keep]
            drifting = act[rng.random(len(act)) < m.drift]
            slot = (rng.random(len(drifting)) * n_interests[drifting]).astype(np.int64)
            interests[drifting, slot] = self._popular_clusters(rng, len(drifting))
        gaps = 1 + rng.exponential(m.mean_gap_seconds, (n, m.max_len)).astype(np.int64)
        start = START_TIMESTAMP + rng.integers(0, m.start_span_days * 86_400, n)
        timestamps = start[:, None] + np.cumsum(gaps, axis=1)
        valid = seq >= 0
        user = np.repeat(np.arange(first_user, first_user + n, dtype=np.int64) + 1, valid.sum(axis=1))
        items = seq[valid]
        self.item_seen[items] = True
        return pa.Table.from_arrays(
            [pa.array(user), pa.array(items + 1), pa.array(timestamps[valid])], schema=SEQ_ARROW_SCHEMA
        )
