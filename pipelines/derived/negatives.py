"""Negative items drawn from the item popularity distribution, excluding the user's own items.

Every draw is a pure function of ``(seed, user, position, k, attempt)`` through the stable
hashes of :mod:`recsys_embed.hashing`: negative ``k`` of the impression at ``position`` in
the user's sequence is the first of the draws ``attempt = 0, 1, ...`` that the user never
interacted with, where a draw maps a 64-bit hash ``h`` to the item whose cumulative count
interval holds ``h mod total_count`` (popularity sampling by inverse CDF). Results therefore
do not depend on batching, partitioning, row order or the polars version. After
``max_rounds`` rejected attempts the draw is made exactly from the popularity of the items
the user has not seen (the same distribution, without rejection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from recsys_embed.hashing import hash_arrow, seed_of, splitmix64_np


def user_position_keys(users: pl.Series, positions: np.ndarray, seed: int) -> np.ndarray:
    """One uint64 key per (user, position): the root of that impression's negative draws."""
    values = users.to_arrow()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_string_view(values.type):
        values = values.cast(pa.large_string())
    elif pa.types.is_integer(values.type):
        values = values.cast(pa.int64())
    elif not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise TypeError(f"user column {users.name!r}: negatives need integer or string user ids, got {users.dtype}")
    user_hash = hash_arrow(values, seed_of(f"recsys_embed.negatives:{seed}"))
    return splitmix64_np(user_hash ^ splitmix64_np(positions.astype(np.uint64)))


@dataclass
class PopularitySampler:
    """Inverse-CDF sampler over item codes ``0..n_items-1`` with weights ``counts [n_items]``."""

    counts: np.ndarray
    max_rounds: int = 32

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.cumulative = np.cumsum(self.counts)
        self.total = int(self.cumulative[-1]) if len(self.counts) else 0
        if self.total <= 0:
            raise ValueError("negative sampling needs at least one item with a positive count")

    @property
    def n_items(self) -> int:
        return len(self.counts)

    def sample(
        self, keys: np.ndarray, user_codes: np.ndarray, seen: np.ndarray, negatives: int, users: pl.Series
    ) -> np.ndarray:
        """Item codes ``[N, negatives]`` for ``N`` impressions.

        Args:
            keys: ``[N]`` uint64 from :func:`user_position_keys`.
            user_codes: ``[N]`` int64 code of each impression's user (index into ``users``).
            seen: sorted int64 ``user_code * n_items + item_code`` of every (user, item) pair (repeats allowed)
                the users interacted with.
            users: user id per code, for error messages.
        """
        n = len(keys)
        flat = np.empty(n * negatives, dtype=np.int64)
        rows = np.repeat(np.arange(n), negatives)
        draw_index = np.tile(np.arange(negatives, dtype=np.uint64), n) << np.uint64(32)
        roots = splitmix64_np(keys[rows] ^ splitmix64_np(draw_index))
        pending = np.arange(len(rows))
        for attempt in range(self.max_rounds):
            if not len(pending):
                break
            draws = self._draw(splitmix64_np(roots[pending] ^ np.uint64(attempt)), self.cumulative, self.total)
            fresh = ~_contains(seen, user_codes[rows[pending]] * self.n_items + draws)
            flat[pending[fresh]] = draws[fresh]
            pending = pending[~fresh]
        for code in np.unique(user_codes[rows[pending]]):
            mine = pending[user_codes[rows[pending]] == code]
            flat[mine] = self._draw_unseen(roots[mine], code, seen, users)
        return flat.reshape(n, negatives)

    def _draw_unseen(self, roots: np.ndarray, code: int, seen: np.ndarray, users: pl.Series) -> np.ndarray:
        lo, hi = np.searchsorted(seen, [code * self.n_items, (code + 1) * self.n_items])
        counts = self.counts.copy()
        counts[seen[lo:hi] - code * self.n_items] = 0
        cumulative = np.cumsum(counts)
        if cumulative[-1] == 0:
            raise ValueError(
                f"user {users[int(code)]!r} interacted with every item, so no negative can be drawn; "
                "drop such users or pass negatives=0"
            )
        return self._draw(splitmix64_np(roots ^ np.uint64(self.max_rounds)), cumulative, int(cumulative[-1]))

    @staticmethod
    def _draw(hashes: np.ndarray, cumulative: np.ndarray, total: int) -> np.ndarray:
        return np.searchsorted(cumulative, (hashes % np.uint64(total)).astype(np.int64), side="right")


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=bool)
    idx = np.searchsorted(sorted_keys, keys)
    return (idx < len(sorted_keys)) & (sorted_keys[np.minimum(idx, len(sorted_keys) - 1)] == keys)
