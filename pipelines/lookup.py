"""Keys to ids for one table group: 0 missing, 1 out-of-vocabulary, 2.. values or buckets.

* hashing: ``2 + hash(key) % size`` with ``recsys_embed.hashing`` (stable across versions);
* vocabulary: exact lookup in a vectorised open-addressing hash table (:class:`HashIndex`,
  about 10x ``np.searchsorted`` on a 2M-value vocabulary). Integers are keyed by
  ``splitmix64(value)``, a bijection, so equal keys mean equal values; strings of at most
  8 bytes by their bytes themselves, longer ones by a 64-bit hash whose every hit is
  confirmed by comparing the strings (:class:`StringIndex`). An unseen value gets the OOV
  id, never another value's id.

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
from recsys_embed.hashing import hash_int_np, hash_str_arrow, splitmix64_np
from recsys_embed.pipelines.columns import byte_word, is_string, numpy_view, string_bytes
from recsys_embed.pipelines.state import TableState


class HashIndex:
    """Distinct uint64 keys -> distinct int ids (> 0), open addressing with linear probing at a
    load factor of at most 0.6; inserts and lookups are vectorised over all keys at once.

        >>> index = HashIndex(np.array([10, 20, 30], np.uint64), np.array([2, 3, 4]))
        >>> index.insert(np.array([40], np.uint64), np.array([5]))
        >>> index.get(np.array([30, 99, 10, 40], np.uint64)).tolist()
        [4, 0, 2, 5]
    """

    MAX_LOAD = 0.6

    def __init__(self, keys: np.ndarray, ids: np.ndarray) -> None:
        self._allocate(len(keys))
        self.insert(keys, ids)

    def _allocate(self, count: int) -> None:
        size = 1 << max(4, int(np.ceil(np.log2(max(count, 1) / self.MAX_LOAD))))
        self.mask = np.uint64(size - 1)
        self.keys = np.zeros(size, np.uint64)
        self.ids = np.zeros(size, np.int32)  # ids < 2**31: vocabulary rows
        self.count = 0

    def insert(self, keys: np.ndarray, ids: np.ndarray) -> None:
        """Add keys that are not in the index yet (distinct), growing it when needed."""
        ids = ids.astype(np.int32)
        if self.count + len(keys) > self.MAX_LOAD * len(self.ids):
            used = self.ids != 0
            old_keys, old_ids = self.keys[used], self.ids[used]
            self._allocate(2 * (self.count + len(keys)))
            self.insert(old_keys, old_ids)
        pending = np.arange(len(keys))
        slot = (keys & self.mask).astype(np.int64)
        while pending.size:
            free = np.flatnonzero(self.ids[slot] == 0)
            self.ids[slot[free]] = ids[pending[free]]  # several keys may aim at one free slot: the last write wins
            won = free[self.ids[slot[free]] == ids[pending[free]]]
            self.keys[slot[won]] = keys[pending[won]]
            placed = np.zeros(pending.size, bool)
            placed[won] = True
            pending, slot = pending[~placed], (slot[~placed] + 1) & int(self.mask)
        self.count += len(keys)

    def get(self, query: np.ndarray) -> np.ndarray:
        """The id of every query key, 0 where absent."""
        slot = (query & self.mask).astype(np.int64)
        ids = self.ids[slot]
        out = np.where(self.keys[slot] == query, ids, 0).astype(np.int64)  # most keys sit in their first slot
        pending = np.flatnonzero((out == 0) & (ids != 0))  # that slot holds another key: probe on
        slot = (slot[pending] + 1) & int(self.mask)
        while pending.size:
            ids = self.ids[slot]
            hit = (self.keys[slot] == query[pending]) & (ids != 0)
            out[pending[hit]] = ids[hit]
            probe = (ids != 0) & ~hit
            pending, slot = pending[probe], (slot[probe] + 1) & int(self.mask)
        return out


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
        ids = np.arange(FIRST_VALUE_ID, FIRST_VALUE_ID + len(vocabulary), dtype=np.int64)
        if self.table.key_type == "int":
            self._index = HashIndex(splitmix64_np(vocabulary.to_numpy().view(np.uint64)), ids)
        else:
            self._strings = StringIndex(vocabulary, ids)

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
        indices, valid = numpy_view(keys.indices)
        if valid is None:
            return ids[indices]
        if not len(ids):  # an empty dictionary: every slot is null
            return np.full(len(keys), MISSING_ID, np.int64)
        out = ids.take(indices, mode="clip")  # null slots hold arbitrary indices
        out[~valid] = MISSING_ID
        return out

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
        if is_string(keys.type):
            ids = self._strings.get(keys)
        else:
            ids = self._index.get(splitmix64_np(pc.fill_null(keys, 0).to_numpy().view(np.uint64)))
        ids[ids == 0] = OOV_ID
        return ids


class StringIndex:
    """Distinct strings -> distinct int ids (> 0), exact.

    A string of at most 8 bytes is its own key: its bytes as a 64-bit word, with the length
    in the top byte when shorter than 8 (that byte is then free), so two short strings never
    share a key and no comparison is needed. Longer strings (and 8-byte strings whose last
    byte is below 9, whose word could read as a shorter string's key) are keyed by a 64-bit
    hash with a seed chosen so that no two of them collide, and every hit is confirmed by
    comparing the strings: an absent string never gets another string's id.

        >>> index = StringIndex(pa.array(["a", "a\\x00", "12345678", "a much longer value"]), np.arange(2, 6))
        >>> index.get(pa.array(["a much longer value", "a", "b", "12345678", "a much longer valuE", "a\\x00"])).tolist()
        [5, 2, 0, 4, 0, 3]
    """

    def __init__(self, values: pa.Array, ids: np.ndarray) -> None:
        short, keys = _short_keys(values)
        self._short = HashIndex(keys[short], ids[short])
        long = np.flatnonzero(~short)
        self._long_values, self._long_ids = values.take(long), ids[long]
        rows = np.arange(1, long.size + 1)  # the long index maps a hash to 1 + its row in _long_values
        for seed in range(1 << 16):
            hashes = hash_str_arrow(self._long_values, seed)
            ordered = np.sort(hashes)
            if not (ordered[1:] == ordered[:-1]).any():
                self._seed = seed
                self._long = HashIndex(hashes, rows)
                return
        raise RuntimeError("no collision-free lookup seed found for a string vocabulary")  # pragma: no cover

    def get(self, query: pa.Array) -> np.ndarray:
        """The id of every query string, 0 where absent or null."""
        short, keys = _short_keys(query)
        out = self._short.get(keys)
        long = np.flatnonzero(~short)
        if long.size:
            strings = query.take(long)
            rows = self._long.get(hash_str_arrow(strings, self._seed)) - 1
            hit = np.flatnonzero(rows >= 0)
            same = pc.equal(self._long_values.take(rows[hit]), strings.take(hit))
            hit = hit[pc.fill_null(same, False).to_numpy(zero_copy_only=False)]
            out[long] = 0
            out[long[hit]] = self._long_ids[rows[hit]]
        if query.null_count:
            out[~pc.is_valid(query).to_numpy(zero_copy_only=False)] = 0
        return out


def _short_keys(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(short [N] bool, key [N] uint64)``: which strings have an exact key (see
    :class:`StringIndex`), and that key, mixed by ``splitmix64`` (a bijection) so that it
    spreads over the hash table."""
    data, starts, lengths = string_bytes(values)
    word = byte_word(data, starts, lengths, 0)
    top = word >> np.uint64(56)
    short = (lengths < 8) | ((lengths == 8) & (top > 8))
    keyed = np.where(lengths < 8, word | (lengths.astype(np.uint64) + np.uint64(1)) << np.uint64(56), word)
    return short, splitmix64_np(keyed)
