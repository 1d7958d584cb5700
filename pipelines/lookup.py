"""Keys to ids for one table group: 0 missing, 1 out-of-vocabulary, 2.. values or buckets.

* hashing: ``2 + hash(key) % size`` with ``recsys_embed.hashing`` (stable across versions);
* vocabulary: exact lookup. Integer vocabularies are sorted once and searched with
  ``np.searchsorted``; string vocabularies are keyed by a 64-bit hash (a lookup seed chosen
  so that no two vocabulary values collide), searched the same way, and every hit is
  confirmed by comparing the strings, so an unseen value gets the OOV id, never another
  value's id.

String columns are looked up through their dictionary (unique values), so the cost grows
with the distinct values of a batch, not its rows; the batches read from one Parquet row
group share its dictionary, whose ids are computed once (``cache``)::

    >>> import pyarrow as pa
    >>> lookup = IdLookup(TableState("vocabulary", key_type="str", vocabulary=pa.array(["b", "a"])))
    >>> lookup(pa.array(["a", "b", None, "zzz", "a"])).tolist()
    [3, 2, 0, 1, 3]
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_embed.features import FIRST_VALUE_ID, MISSING_ID, OOV_ID
from recsys_embed.hashing import hash_int_np, hash_str_arrow
from recsys_embed.pipelines.columns import is_string
from recsys_embed.pipelines.state import TableState


class IdLookup:
    """Maps an Arrow array of keys (int64 or string, maybe dictionary-encoded) of one table
    group to an int64 numpy array of ids ``[N]``."""

    def __init__(self, table: TableState) -> None:
        self.table = table
        self.size = np.uint64(table.size)
        self._cache: dict[str, tuple[pa.Array, np.ndarray]] = {}
        if table.ids == "vocabulary":
            assert table.vocabulary is not None
            self._build_vocabulary(table.vocabulary)

    def _build_vocabulary(self, vocabulary: pa.Array) -> None:
        self._vocabulary = vocabulary
        if self.table.key_type == "int":
            values = vocabulary.to_numpy()
            self._order = np.argsort(values, kind="stable")
            self._sorted = values[self._order]
            return
        for seed in range(1 << 16):
            hashes = hash_str_arrow(vocabulary, seed)
            self._order = np.argsort(hashes, kind="stable")
            self._sorted = hashes[self._order]
            if not (self._sorted[1:] == self._sorted[:-1]).any():
                self._seed = seed
                return
        raise RuntimeError("no collision-free lookup seed found for a string vocabulary")  # pragma: no cover

    def __call__(self, keys: pa.Array, cache: str | None = None) -> np.ndarray:
        """Ids ``[N]`` of ``keys``; ``cache`` names the column, whose last dictionary's ids
        are kept and reused when the next batch carries an equal dictionary."""
        if isinstance(keys, pa.ChunkedArray):
            keys = keys.combine_chunks()
        if is_string(keys.type):
            keys = pc.dictionary_encode(keys)
        if not pa.types.is_dictionary(keys.type):
            return self._unique_ids(keys)
        ids = self._dictionary_ids(keys.dictionary, cache)
        indices = keys.indices
        if indices.null_count:
            ids = np.append(ids, MISSING_ID)
            indices = pc.fill_null(indices, len(ids) - 1)
        return ids[indices.to_numpy()]

    def _dictionary_ids(self, dictionary: pa.Array, cache: str | None) -> np.ndarray:
        if cache is None:
            return self._unique_ids(dictionary)
        last = self._cache.get(cache)
        if last is not None and len(last[0]) == len(dictionary) and last[0].equals(dictionary):
            return last[1]
        ids = self._unique_ids(dictionary)
        self._cache[cache] = (dictionary, ids)
        return ids

    def _unique_ids(self, keys: pa.Array) -> np.ndarray:
        if self.table.ids == "hashing":
            if is_string(keys.type):
                hashes = hash_str_arrow(keys, self.table.seed)  # type: ignore[arg-type]
            else:
                hashes = hash_int_np(pc.fill_null(keys, 0).to_numpy(), self.table.seed)  # type: ignore[arg-type]
            ids = (hashes % self.size).astype(np.int64) + FIRST_VALUE_ID
        else:
            ids = self._vocabulary_ids(keys)
        if keys.null_count:
            ids[~pc.is_valid(keys).to_numpy(zero_copy_only=False)] = MISSING_ID
        return ids

    def _vocabulary_ids(self, keys: pa.Array) -> np.ndarray:
        if len(self._sorted) == 0:
            return np.full(len(keys), OOV_ID, np.int64)
        if is_string(keys.type):
            query = hash_str_arrow(keys, self._seed)
        else:
            query = pc.fill_null(keys, 0).to_numpy()
        position = np.minimum(np.searchsorted(self._sorted, query), len(self._sorted) - 1)
        hit = self._sorted[position] == query
        candidate = self._order[position]
        if is_string(keys.type) and hit.any():
            where = np.flatnonzero(hit)
            same = pc.equal(self._vocabulary.take(pa.array(candidate[where])), keys.take(pa.array(where)))
            hit[where] = pc.fill_null(same, False).to_numpy(zero_copy_only=False)
        return np.where(hit, candidate + FIRST_VALUE_ID, OOV_ID).astype(np.int64)
